"""The transformer: causal, cache-consistent, and it learns."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from textgen.model.cache import KVCache, RowCache
from textgen.model.cpu_step import CpuStep, lay_out_for_steps
from textgen.model.kernels import dropout, squared_relu
from textgen.model.transformer import Transformer
from textgen.settings import ModelConfig

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


def test_squared_relu_has_the_gradient_of_relu_squared():
    x = torch.randn(64, dtype=torch.float64, requires_grad=True)
    x.data[:4] = torch.tensor([-1.0, -1e-9, 0.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(squared_relu(x), torch.relu(x) ** 2)
    (manual,) = torch.autograd.grad(squared_relu(x).sum(), x)
    (reference,) = torch.autograd.grad((torch.relu(x) ** 2).sum(), x)
    torch.testing.assert_close(manual, reference)
    assert torch.autograd.gradcheck(squared_relu, (x,))


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_dropout_zeroes_a_share_p_and_keeps_the_expected_value(p):
    torch.manual_seed(0)
    x = torch.full((64, 128, 128), 3.0, requires_grad=True)
    y = dropout(x, p, training=True)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.005)
    assert y.mean().item() == pytest.approx(3.0, rel=0.01)  # kept values scaled by 1/(1-p)
    expected = torch.full_like(y[kept], 3.0 / (1 - p))
    torch.testing.assert_close(y[kept], expected, rtol=1e-4, atol=0)  # p to 1/65536
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach() / 3.0)  # gradient flows through kept ones
    rows = kept.float().mean(dim=(1, 2))  # every part of the tensor, not only on average
    assert rows.min().item() > 1 - p - 0.02 and rows.max().item() < 1 - p + 0.02
    phases = kept.view(-1, 4).float().mean(dim=0)  # four masks come from each random draw
    torch.testing.assert_close(phases, torch.full_like(phases, 1 - p), atol=0.005, rtol=0)


def test_dropout_is_the_identity_in_evaluation_and_repeats_under_a_seed():
    x = torch.randn(4, 8, 16)
    assert dropout(x, 0.2, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    torch.manual_seed(1)
    first = dropout(x, 0.2, training=True)
    torch.manual_seed(1)
    torch.testing.assert_close(dropout(x, 0.2, training=True), first)
    assert not torch.equal(dropout(x, 0.2, training=True), first)
    odd = torch.ones(3, 5, 7)  # not a multiple of 4 elements: torch's own dropout
    assert 0 < (dropout(odd, 0.5, training=True) == 0).sum() < odd.numel()


STEPS = ["torch", "numpy", "compiled"]  # how a row cache's step is taken


def stepped_model(step: str, **variant) -> torch.nn.Module:
    """A small model for a test of `step`: laid out for it where it is compiled."""
    model = small_model(**variant)
    if step == "compiled":
        lay_out_for_steps(model)
    return model


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_rows_at_their_own_positions_decode_as_each_sequence_alone(variant, step):
    """A row cache holds sequences of different lengths, one new token each per step:
    each row gets the logits its sequence gets decoded on its own (in PyTorch, or in the
    NumPy or C step the server uses on the CPU)."""
    model = stepped_model(step, **variant)
    torch.manual_seed(1)
    sequences = [torch.randint(0, 300, (n,)) for n in (3, 9, 5, 12)]
    rows = RowCache(model.config, 4, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        for row, seq in enumerate(sequences):  # each prompt read on its own, into its row
            single = KVCache(model.config, 1, torch.device("cpu"), torch.float32)
            model(seq[None, :-1], cache=single)
            rows.store_row(row, single)
        last = torch.stack([seq[-1] for seq in sequences])  # (4,)
        if step != "torch":
            batched = CpuStep(model, rows, compiled=step == "compiled")(last)
        else:
            batched = model(last[:, None], cache=rows)[0][:, -1]
        for row, seq in enumerate(sequences):
            alone = model(seq[None])[0][0, -1]
            torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=1e-4)
    assert rows.lengths.tolist() == [len(seq) for seq in sequences]


@pytest.mark.parametrize("kind", STEPS)
def test_what_a_row_gets_never_depends_on_the_other_rows(kind):
    model = stepped_model(kind)
    torch.manual_seed(2)

    def step(others: int) -> torch.Tensor:
        rows = RowCache(model.config, 4, torch.device("cpu"), torch.float32)
        with torch.no_grad():
            for row in range(4):
                seq = torch.arange(6) + 7 if row == 0 else torch.randint(0, 300, (others + row,))
                single = KVCache(model.config, 1, torch.device("cpu"), torch.float32)
                model(seq[None], cache=single)
                rows.store_row(row, single)
            tokens = torch.tensor([5, *([others] * 3)])
            if kind != "torch":
                return CpuStep(model, rows, compiled=kind == "compiled")(tokens)[0]
            return model(tokens[:, None], cache=rows)[0][0, -1]

    assert torch.equal(step(2), step(9))  # bitwise: the batch's company changes nothing


STEPPED = [  # every architecture choice the NumPy step spells out again
    {},
    dict(position="learned", norm="layernorm", activation="relu2", tie_embeddings=False),
    dict(qk_norm=True, logit_softcap=15.0),
    dict(activation="gelu", mlp_ratio=2),
]


@pytest.mark.parametrize("kind", ["as-trained", "laid-out", "compiled"])
@pytest.mark.parametrize("variant", STEPPED)
def test_a_numpy_decoding_step_gives_the_models_logits(variant, kind):
    """Decoding one token at a time in NumPy (or in C) after a prompt read by the model
    gives the logits of a full forward pass, and leaves the cache as the model's own steps
    would: the two interleave; with the weights as trained, or laid out for the step as a
    loaded model's are."""
    model = small_model(**variant)
    ids = torch.randint(0, 300, (2, 16))
    with torch.inference_mode():
        full, _ = model(ids)
        if kind != "as-trained":
            lay_out_for_steps(model)
            assert model.blocks[0].mlp.up.weight.T.is_contiguous()
        cache = KVCache(model.config, 2, torch.device("cpu"), torch.float32)
        assert CpuStep.for_model(model)
        step = CpuStep(model, cache, compiled=kind == "compiled")
        parts = [model(ids[:, :5], cache=cache)[0][:, -1]]
        for t in range(5, 16):
            if t == 11:  # a step of the model's own, between NumPy's
                parts.append(model(ids[:, t : t + 1], cache=cache)[0][:, -1])
            else:
                parts.append(step(ids[:, t]))
        assert cache.length == 16
        with pytest.raises(ValueError, match="full"):
            step(ids[:, 0])
    torch.testing.assert_close(torch.stack(parts, 1), full[:, 4:], atol=1e-5, rtol=1e-4)


def test_models_the_numpy_step_does_not_cover_keep_pytorchs():
    model = small_model()
    assert not CpuStep.for_model(model.train())  # dropout: PyTorch's
    assert not CpuStep.for_model(model.eval().to(torch.bfloat16))  # NumPy has no bf16


def test_without_a_working_c_compiler_decoding_steps_run_in_numpy(tmp_path, monkeypatch):
    """The C step is built on first use; where that fails (here a compiler that always
    fails, and an empty cache) nothing breaks: the steps run in NumPy, to the same logits."""
    from textgen.model import native

    model = stepped_model("compiled")
    ids = torch.randint(0, 300, (1, 12))
    with torch.inference_mode():
        full, _ = model(ids)
        monkeypatch.setenv("TEXTGEN_CACHE", str(tmp_path))
        monkeypatch.setenv("CC", "false")
        native.library.cache_clear()
        try:
            cache = KVCache(model.config, 1, torch.device("cpu"), torch.float32)
            step = CpuStep(model, cache)
            assert step.native is None and not list(tmp_path.iterdir())
            model(ids[:, :4], cache=cache)
            logits = torch.stack([step(ids[:, t]) for t in range(4, 12)], 1)
        finally:
            native.library.cache_clear()
    torch.testing.assert_close(logits, full[:, 4:], atol=1e-5, rtol=1e-4)


def test_a_damaged_built_step_is_built_again_and_a_hanging_compiler_given_up_on(
    tmp_path, monkeypatch
):
    """A library in the cache that does not load (a build cut short, a damaged disk) is
    built again, not left to slow every later run; a compiler that hangs is stopped."""
    from textgen.model import native

    monkeypatch.setenv("TEXTGEN_CACHE", str(tmp_path))
    loads = [sys.executable, "-c", "from textgen.model import native; print(native.library())"]
    # in processes of their own: this one must never load a file the test then damages
    assert "CDLL" in subprocess.run(loads, capture_output=True, text=True, check=True).stdout
    (built,) = tmp_path.glob("step-*")
    built.write_bytes(b"not a library")
    assert "CDLL" in subprocess.run(loads, capture_output=True, text=True, check=True).stdout
    assert built.stat().st_size > 1000
    built.unlink()
    try:
        hangs = tmp_path / "cc"
        hangs.write_text("#!/bin/sh\nsleep 30\n")
        hangs.chmod(0o755)
        monkeypatch.setenv("CC", f"{hangs} -O1")  # a command with its arguments
        monkeypatch.setattr(native, "BUILD_SECONDS", 0.5)
        native.library.cache_clear()
        assert native.library() is None and not list(tmp_path.glob("step-*"))
    finally:
        native.library.cache_clear()


@pytest.mark.parametrize("variant", STEPPED)
def test_a_prompt_read_at_once_in_c_is_bitwise_a_token_at_a_time(variant):
    """The C step reads a prompt in one call (generate's, and each request's in the server)
    to the same keys, values and logits, bit for bit, as feeding it a token at a time; and
    those are the forward pass's logits."""
    model = stepped_model("compiled", **variant)
    ids = torch.randint(0, 300, (2, 11))
    with torch.inference_mode():
        full, _ = model(ids)
        at_once = KVCache(model.config, 2, torch.device("cpu"), torch.float32)
        step = CpuStep(model, at_once, compiled=True)
        read = torch.stack([step.read(ids[:, :6]), step.read(ids[:, 6:])], 1)
        one_by_one = KVCache(model.config, 2, torch.device("cpu"), torch.float32)
        single = CpuStep(model, one_by_one, compiled=True)
        steps = torch.stack([single(ids[:, t]) for t in range(11)], 1)
        rows = RowCache(model.config, 3, torch.device("cpu"), torch.float32)
        in_row = CpuStep(model, rows, compiled=True).read(ids[1], row=2)
    assert at_once.length == one_by_one.length == 11 and rows.lengths.tolist() == [0, 0, 11]
    assert torch.equal(read, steps[:, [5, 10]])
    assert torch.equal(at_once.keys, one_by_one.keys) and torch.equal(
        at_once.values, one_by_one.values
    )
    assert torch.equal(in_row, steps[1, 10]) and torch.equal(rows.keys[:, 2], one_by_one.keys[:, 1])
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-4)


def test_rows_stepped_alone_in_c_get_bitwise_what_a_step_of_every_row_gives():
    """The server steps only its busy rows: each gets what it would in a full step."""
    model = stepped_model("compiled")
    torch.manual_seed(3)
    caches = [RowCache(model.config, 4, torch.device("cpu"), torch.float32) for _ in range(2)]
    with torch.no_grad():
        for rows in caches:
            for row, length in enumerate((3, 7, 5, 9)):
                CpuStep(model, rows, compiled=True).read(torch.arange(length) + row, row=row)
        tokens = torch.tensor([11, 12, 13, 14])
        every = CpuStep(model, caches[0], compiled=True)(tokens)
        some = CpuStep(model, caches[1], compiled=True).step_rows([1, 3], [7, 9], [12, 14])
    assert torch.equal(some, every[[1, 3]])
    assert caches[1].lengths.tolist() == [3, 8, 5, 10]
    assert torch.equal(caches[1].keys[:, [1, 3]], caches[0].keys[:, [1, 3]])


def test_the_c_step_refuses_a_token_id_past_the_vocabulary_and_touches_nothing():
    """Token ids reach the step from a server's requests too: one out of bounds is an
    error before anything is read or written, never a read past the embedding."""
    model = stepped_model("compiled")
    cache = KVCache(model.config, 1, torch.device("cpu"), torch.float32)
    step = CpuStep(model, cache, compiled=True)
    for bad in (300, -1, 10**12):
        with pytest.raises(ValueError, match="vocabulary"):
            step.read(torch.tensor([[1, 2, bad]]))
    assert cache.length == 0 and not cache.keys.any()
