"""The transformer: causal, cache-consistent, and it learns."""

from __future__ import annotations

import pytest
import torch

from textgen.config import ModelConfig
from textgen.model import KVCache, Transformer

VARIANTS = [
    dict(position="rope", norm="rmsnorm", activation="gelu", tie_embeddings=True),
    dict(position="learned", norm="layernorm", activation="relu2", tie_embeddings=False),
]


def small_model(**overrides) -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=300, context_window=16, n_layer=2, n_embd=32, n_head=4, **overrides
    )
    return Transformer(config).eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_changing_a_later_token_never_changes_earlier_logits(variant):
    model = small_model(**variant)
    ids = torch.randint(0, 300, (1, 16))
    changed = ids.clone()
    changed[0, 10:] = (changed[0, 10:] + 7) % 300
    with torch.no_grad():
        a, _ = model(ids)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_cache_gives_the_logits_of_a_full_forward_pass(variant):
    model = small_model(**variant)
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        full, _ = model(ids)
        cache = KVCache(model.config, 2, torch.device("cpu"), torch.float32)
        parts = [model(ids[:, :6], cache=cache)[0], model(ids[:, 6:9], cache=cache)[0]]
        parts += [model(ids[:, t : t + 1], cache=cache)[0] for t in range(9, 16)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


def test_sequences_longer_than_the_context_window_are_refused():
    model = small_model()
    with pytest.raises(ValueError, match="context window"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_loss_is_cross_entropy_of_the_returned_logits():
    model = small_model()
    ids = torch.randint(0, 300, (2, 8))
    targets = torch.randint(0, 300, (2, 8))
    logits, loss = model(ids, targets)
    expected = torch.nn.functional.cross_entropy(logits.view(-1, 300), targets.view(-1))
    torch.testing.assert_close(loss, expected)


def test_untrained_loss_is_near_uniform_and_falls_with_training():
    model = small_model().train()
    pattern = torch.arange(16).repeat(4, 1) * 3 % 300  # a fixed sequence to memorise
    x, y = pattern[:, :-1], pattern[:, 1:]
    _, first = model(x, y)
    assert abs(first.item() - torch.log(torch.tensor(300.0)).item()) < 0.5
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < first.item() / 4


def test_tied_embeddings_share_one_matrix():
    model = small_model(tie_embeddings=True)
    assert model.unembed.weight is model.embed.weight
    untied = small_model(tie_embeddings=False)
    assert untied.num_parameters() == model.num_parameters() + 300 * 32
