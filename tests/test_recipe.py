"""The training recipe's parts, each held to the behaviour it is there for."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from textgen.decode.completion import Completion
from textgen.model.loaded import LoadedModel
from textgen.model.transformer import Transformer, apply_rotary
from textgen.settings import ModelConfig, ModelShape, SampleConfig, TrainConfig
from textgen.store import folder as model_folder
from textgen.text.segmentations import MAX_SEGMENTATIONS, segmentations
from textgen.training import recipe
from textgen.training.optim import Muon, fraction_done, lr_multiplier, make_optimizer, orthogonalize
from textgen.training.recipe import held_out_tokens, model_shape, regularised

D = 16


def test_rotary_attention_scores_depend_only_on_relative_position():
    config = ModelConfig(vocab_size=300, context_window=64, n_layer=1, n_embd=32, n_head=2)
    model = Transformer(config)
    q, k = torch.randn(1, 1, 1, D), torch.randn(1, 1, 1, D)

    def score(query_pos: int, key_pos: int) -> float:
        rq = apply_rotary(q, model.rotation(torch.tensor([query_pos])))
        rk = apply_rotary(k, model.rotation(torch.tensor([key_pos])))
        return (rq * rk).sum().item()

    for shift in (1, 7, 30):
        assert score(10 + shift, 4 + shift) == pytest.approx(score(10, 4), abs=1e-4)
    assert score(10, 4) != pytest.approx(score(10, 9), abs=1e-3)  # distance matters


def test_compiled_models_rotate_exactly_as_eager_ones():
    """Under torch.compile the rotation is spelled in real numbers; it is the same."""
    config = ModelConfig(vocab_size=300, context_window=64, n_layer=1, n_embd=32, n_head=2)
    model = Transformer(config)
    x = torch.randn(3, 2, 64, D)
    complex_form = model.rotation(torch.arange(64))
    real_form = torch.stack((complex_form.real, complex_form.imag))
    torch.testing.assert_close(apply_rotary(x, real_form), apply_rotary(x, complex_form))


@pytest.mark.parametrize("qk_norm", [True, False])
def test_qk_norm_bounds_the_attention_logits(qk_norm):
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=300, context_window=16, n_layer=1, n_embd=64, n_head=4, qk_norm=qk_norm
    )
    model = Transformer(config)
    attention = model.blocks[0].attn
    x = 1000 * torch.randn(1, 16, 64)  # a residual stream grown very large
    q, k, _ = attention.queries_keys_values(x, model.rotation(torch.arange(16)))
    scores = q @ k.transpose(-2, -1) / math.sqrt(config.head_dim)
    bound = math.sqrt(config.head_dim)
    if qk_norm:
        assert scores.abs().max() <= bound * (1 + 1e-4)
    else:
        assert scores.abs().max() > 100 * bound


def test_time_driven_schedule_reaches_zero_at_the_budget_and_never_goes_negative():
    config = TrainConfig(steps=None, time_budget=60.0, warmup_steps=10, cooldown_fraction=0.4)
    values = []
    for tenth in range(0, 700):
        elapsed = tenth / 10
        done = fraction_done(step=tenth, elapsed=elapsed, config=config)
        values.append(lr_multiplier(tenth, done, config.warmup_steps, config.cooldown_fraction))
    assert min(values) >= 0
    assert values[600] == 0.0 and values[599] > 0  # zero exactly at 60 s, not before
    assert values[100:360] == [1.0] * 260  # flat between warm-up and cool-down


def _share_near_one(matrix: torch.Tensor) -> float:
    """The share of singular values in [0.5, 1.3]: 1.0 for a (semi-)orthogonal matrix."""
    singular = torch.linalg.svdvals(matrix)
    return ((singular > 0.5) & (singular < 1.3)).float().mean().item()


def test_orthogonalized_update_is_close_to_orthogonal():
    """Newton-Schulz lifts every direction that is not vanishingly small to about 1 (a
    random square matrix always has a few near-zero directions, which stay small)."""
    torch.manual_seed(0)
    for shape in [(64, 32), (32, 64), (3, 48, 48), (96, 96)]:
        g = torch.randn(*shape) * torch.logspace(-2, 0, shape[-1])  # badly conditioned
        assert _share_near_one(g / torch.linalg.svdvals(g).max()) < 0.5, shape
        o = orthogonalize(g)
        assert _share_near_one(o) > 0.9, shape
        assert torch.linalg.svdvals(o).max() < 1.3


def test_muon_moves_every_direction_of_a_matrix_by_about_the_same_amount():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.zeros(64, 32))
    optimizer = Muon([weight], lr=0.1)
    weight.grad = torch.randn(64, 32) * torch.logspace(-2, 0, 32)
    optimizer.step()
    step = weight.detach() / 0.1 / (64 / 32) ** 0.5  # Muon scales tall matrices up
    assert _share_near_one(step) > 0.9


def test_muons_weight_decay_shrinks_a_matrix_by_lr_times_decay_each_step():
    """Decoupled, as AdamW's: with no gradient at all a matrix only shrinks, by the
    scheduled learning rate times the decay; without a decay it stays as it was."""
    weight = torch.nn.Parameter(torch.ones(8, 8))
    optimizer = Muon([weight], lr=0.05, weight_decay=2.0)
    weight.grad = torch.zeros(8, 8)
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.full((8, 8), 0.9))
    optimizer.param_groups[0]["lr"] = 0.0  # the schedule's end: no decay either
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.full((8, 8), 0.9))
    still = torch.nn.Parameter(torch.ones(8, 8))
    plain = Muon([still], lr=0.05)
    still.grad = torch.zeros(8, 8)
    plain.step()
    assert torch.equal(still.detach(), torch.ones(8, 8))


def test_the_recipes_optimizer_decays_the_blocks_with_muon_and_the_embedding_with_adamw():
    model = Transformer(ModelConfig(vocab_size=300, context_window=16, n_layer=2, n_embd=32))
    settings = TrainConfig(weight_decay=1.0)
    optimizer = make_optimizer(model, settings, torch.device("cpu"))
    muon, adamw = optimizer.optimizers
    assert {g["weight_decay"] for g in muon.param_groups} == {settings.muon_weight_decay} != {0}
    decayed = [g for g in adamw.param_groups if g["weight_decay"] == 1.0]
    assert [p.shape for g in decayed for p in g["params"]] == [model.embed.weight.shape]
    with pytest.raises(ValueError, match="weight decay"):  # the recipe settles it first
        make_optimizer(model, TrainConfig(), torch.device("cpu"))


NEW_RECIPE = dict(
    qk_norm=True, zero_init_proj=True, logit_softcap=15.0, activation="relu2", tie_embeddings=False
)


def test_a_model_trained_with_the_new_recipe_reloads_and_generates_identically(tokenizer, tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        context_window=32,
        n_layer=2,
        n_embd=64,
        n_head=4,
        **NEW_RECIPE,
    )
    model = Transformer(config)
    settings = TrainConfig(optimizer="muon", weight_decay=0.1)
    optimizer = make_optimizer(model, settings, torch.device("cpu"))
    ids = torch.tensor([tokenizer.encode("The cat sees the moon by the sea. " * 3)[:33]])
    for _ in range(5):
        _, loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert model.blocks[0].mlp.down.weight.abs().sum() > 0  # zero-initialised, then trained
    model_folder.save_weights(tmp_path, model)
    model_folder.save_tokenizer(tmp_path, tokenizer)
    model_folder.save_config(tmp_path, config, tokenizer)
    loaded = model_folder.load(tmp_path)
    assert loaded.model_config == config

    def greedy(lm_model) -> list[int]:
        lm = LoadedModel(tmp_path, lm_model.eval(), tokenizer, {})
        completion = Completion(lm, "The dog", SampleConfig(temperature=0, max_new_tokens=20))
        return [r.token_id for r in completion]

    assert greedy(model) == greedy(loaded.model)


def test_softcap_bounds_the_logits():
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=300, context_window=8, n_layer=1, n_embd=32, n_head=2, logit_softcap=5.0
    )
    model = Transformer(config)
    with torch.no_grad():
        model.unembed.weight.mul_(1000)
        logits, _ = model(torch.randint(0, 300, (1, 8)))
    assert logits.abs().max() <= 5.0


def test_bpe_dropout_spells_the_same_text_with_other_tokens(tokenizer, corpus_file):
    text = corpus_file.read_text()[:3000]
    noisy = tokenizer.with_bpe_dropout(0.3)
    spellings = [noisy.encode(text) for _ in range(3)]
    assert all(tokenizer.decode(ids) == text for ids in spellings)
    assert any(ids != tokenizer.encode(text) for ids in spellings)
    assert all(len(ids) >= len(tokenizer.encode(text)) for ids in spellings)  # merges skipped
    assert tokenizer.encode(text) == tokenizer.encode(text)  # the tokenizer itself is unchanged


def _segmented(corpus_file, tokenizer, callback=lambda event: None, **changes):
    from textgen.text.corpus import open_corpus
    from textgen.training.batches import split
    from textgen.training.preparation import encode

    config = TrainConfig(**{"steps": 1, "bpe_dropout": 0.2, "seed": 3, **changes})
    with open_corpus([str(corpus_file)]) as corpus:
        token_file = encode(corpus, tokenizer, lambda event: None)
    train_tokens = split(token_file, config, 32).train
    stream = segmentations(
        token_file, train_tokens, tokenizer, config.bpe_dropout, config.seed, callback
    )
    return train_tokens, stream


def test_bpe_dropout_trains_on_copies_of_the_training_text_only(corpus_file, tokenizer):
    train_tokens, stream = _segmented(corpus_file, tokenizer)
    tokens = stream.array()
    assert np.array_equal(tokens[: len(train_tokens)], train_tokens)  # first, as it is
    eot = tokenizer.eot_id
    documents = np.count_nonzero(train_tokens == eot)
    assert np.count_nonzero(tokens == eot) == documents * MAX_SEGMENTATIONS
    held_in = tokenizer.decode(train_tokens[train_tokens != eot])
    copies = np.split(tokens, np.flatnonzero(tokens == eot))
    texts = [tokenizer.decode(c[c != eot]) for c in copies if len(c)]
    # every copy spells one of the training documents: nothing of the held-out text
    assert "".join(texts) == held_in * MAX_SEGMENTATIONS
    assert not np.array_equal(tokens[len(train_tokens) :][: len(train_tokens)], train_tokens)


def test_bpe_dropout_segmentations_are_kept_for_a_resume_and_none_without_it(
    corpus_file, tokenizer
):
    notices = []
    _, first = _segmented(corpus_file, tokenizer)
    _, again = _segmented(corpus_file, tokenizer, notices.append)
    assert np.array_equal(first.array(), again.array())
    assert "found in the cache" in notices[-1].message
    _, other_seed = _segmented(corpus_file, tokenizer, seed=4)
    assert other_seed.path != first.path
    assert _segmented(corpus_file, tokenizer, bpe_dropout=0.0)[1] is None


def test_bpe_dropout_says_so_when_the_corpus_leaves_no_room_for_a_copy(
    corpus_file, tokenizer, monkeypatch
):
    import textgen.text.segmentations as module

    monkeypatch.setattr(module, "SEGMENTATION_TOKENS", 1000)
    notices = []
    assert _segmented(corpus_file, tokenizer, notices.append)[1] is None
    assert "BPE-dropout is off" in notices[-1].message


def test_a_shape_can_give_every_architecture_setting_but_the_vocabulary():
    """ModelShape is ModelConfig less the vocabulary, every field optional: a setting
    added to one and not the other would be impossible to choose when training."""
    shape_fields = {f.name: f.default for f in dataclasses.fields(ModelShape)}
    config_fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size"}
    assert set(shape_fields) == config_fields
    assert all(default is None for default in shape_fields.values())
    config = ModelConfig(vocab_size=300, n_layer=3, n_embd=48, n_head=2, norm="layernorm")
    assert ModelShape.of(config).config(300) == config  # a whole model's shape round-trips


def test_what_a_shape_leaves_open_the_recipe_fills_and_what_it_gives_wins():
    given = ModelShape(context_window=64, dropout=0.0)
    settings = TrainConfig(bpe_dropout=0.3, weight_decay=0.2)
    shape, config = regularised(given, settings, epochs=100)
    assert shape.dropout == 0.0 and shape.context_window == 64  # given: kept as given
    assert config.bpe_dropout == 0.3 and config.weight_decay == 0.2
    open_shape, config = regularised(ModelShape(), TrainConfig(), epochs=100)
    assert open_shape.dropout == recipe.DROPOUT and open_shape.n_layer is None
    assert config.bpe_dropout == recipe.BPE_DROPOUT
    assert config.weight_decay == recipe.MANY_EPOCHS_WEIGHT_DECAY
    assert model_shape("small").but(ModelShape(n_head=2)).given() == {
        "n_layer": 4,
        "n_embd": 128,
        "n_head": 2,
    }


def test_validation_holds_out_a_small_share_but_enough_tokens_for_a_steady_figure():
    assert held_out_tokens(1_000_000) == 10_000  # 1 %
    assert held_out_tokens(100_000) == 2048  # at least 2,048 tokens ...
    assert held_out_tokens(5_000) == 500  # ... but never more than a tenth of a small corpus
    assert held_out_tokens(10**9) == 2**18  # a cap on large corpora
    assert held_out_tokens(1_000_000, fraction=0.1) == 100_000  # --val-fraction, as given
    assert held_out_tokens(10**9, fraction=0.1) == 2**18
    assert held_out_tokens(10, fraction=0.01) == 2  # something to validate on, always


def test_regularisation_grows_with_the_epochs_a_run_reads_and_is_off_for_one_pass():
    """Dropout, BPE-dropout and the embedding's weight decay follow the epochs: none (or
    the usual 0.1 weight decay) for a run that reads its text a few times (or once: a
    large corpus), dropout once it reads it about ten times, weight decay 1.0 past
    fifteen, BPE-dropout too past twenty; more epochs never mean less of any."""
    assert recipe.expected_epochs(planned_tokens=5_000, train_tokens=1_000) == 5.0
    assert regularised(ModelShape(), TrainConfig(), epochs=0.5)[0].dropout == 0.0
    assert regularised(ModelShape(), TrainConfig(), epochs=0.5)[1].bpe_dropout == 0.0
    few = regularised(ModelShape(), TrainConfig(), epochs=4)
    assert few[0].dropout == 0.0 and few[1].bpe_dropout == 0.0
    assert few[1].weight_decay == recipe.WEIGHT_DECAY == 0.1
    some = regularised(ModelShape(), TrainConfig(), epochs=14)
    assert some[0].dropout == recipe.DROPOUT > 0 and some[1].bpe_dropout == 0.0
    assert some[1].weight_decay == recipe.WEIGHT_DECAY
    more = regularised(ModelShape(), TrainConfig(), epochs=16)
    assert more[1].weight_decay == recipe.MANY_EPOCHS_WEIGHT_DECAY > recipe.WEIGHT_DECAY
    assert more[1].bpe_dropout == 0.0
    many = regularised(ModelShape(), TrainConfig(), epochs=40)
    assert many[0].dropout == recipe.DROPOUT and many[1].bpe_dropout == recipe.BPE_DROPOUT > 0
    epochs = [0.1, 0.9, 1, 2, 8, 10, 15.9, 20, 30, 1000]
    for rule in (recipe.default_dropout, recipe.default_bpe_dropout, recipe.default_weight_decay):
        chosen = [rule(e) for e in epochs]
        assert chosen == sorted(chosen), rule.__name__


def test_the_weight_average_weighs_each_step_by_its_power_profile():
    """After T updates the average is sum_t p_t (t^(g+1) - (t-1)^(g+1)) / T^(g+1): the
    last steps weigh most, and the first (the random start) all but vanishes."""
    from textgen.training.averaging import WeightAverage, gamma_for_width

    layer = torch.nn.Linear(1, 1, bias=False)
    average = WeightAverage(layer, 0.1)
    g = average.gamma
    assert 6 < g < 8 and gamma_for_width(0.05) > g  # narrower: a steeper profile
    with torch.no_grad():
        for t in range(1, 201):
            layer.weight.fill_(float(t))
            average.update()
    expected = sum(t * (t ** (g + 1) - (t - 1) ** (g + 1)) for t in range(1, 201)) / 200 ** (g + 1)
    assert average.average[0].item() == pytest.approx(expected, rel=1e-5)
    assert 170 < expected < 200
    average.copy_into(layer)
    assert layer.weight.item() == pytest.approx(expected, rel=1e-5)


def test_a_run_with_weight_averaging_ends_with_the_averaged_weights(tmp_path, corpus_file):
    from textgen.text.corpus import open_corpus
    from textgen.training.run import resume, train

    shape = ModelShape(n_layer=1, n_embd=32, n_head=1, context_window=16)
    settings = dict(time_budget=None, eval_interval=10, batch_size=4, bpe_dropout=0.0, seed=0)
    with open_corpus([str(corpus_file)]) as corpus:
        plain = train(tmp_path / "a", corpus, TrainConfig(steps=40, **settings), shape, 300)
        averaged = train(
            tmp_path / "b", corpus, TrainConfig(steps=40, average_width=0.1, **settings), shape, 300
        )
    a = model_folder.load_train_state(tmp_path / "a")["model"]
    b = model_folder.load_train_state(tmp_path / "b")["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the same run, but averaged
    assert plain.steps == averaged.steps == 40
    state = model_folder.load_train_state(tmp_path / "b")
    assert state["average"]["steps"] == 40  # kept for a resume
    more = resume(tmp_path / "b", more_steps=5)
    assert more.steps == 45


def test_a_spread_held_out_set_takes_pieces_through_the_corpus_and_trains_on_the_rest():
    from textgen.training.batches import split

    tokens = np.arange(10_000, dtype=np.uint16)

    class File:
        def array(self):
            return tokens

    pieces = recipe.held_out_pieces(len(tokens), 2048, 128)
    assert len(pieces) == 15 and pieces[-1][1] == len(tokens)
    assert sum(b - a for a, b in pieces) == 2048 and all(b - a > 128 for a, b in pieces)
    config = TrainConfig(val_fraction=0.2048, held_out="spread")
    data = split(File(), config, 128)
    assert len(data.train) + len(data.val) == len(tokens)
    assert not set(data.train.tolist()) & set(data.val.tolist())
    assert data.val.min() < 1000 and data.val.max() == 9999  # from the start to the end
    tail = split(File(), TrainConfig(val_fraction=0.2048), 128)
    assert tail.val.tolist() == list(range(10_000 - 2048, 10_000))


def test_windows_read_in_epochs_cover_the_text_once_an_epoch_and_resume_where_they_were():
    from textgen.training.batches import Batches

    tokens, context = np.arange(1000), 10
    batches = Batches(tokens, context, batch_size=7, seed=3, order="epochs")
    first = batches.epoch_starts().tolist()
    targets = [t for s in first for t in range(s + 1, s + context + 1)]
    assert len(targets) == len(set(targets))  # no token twice in an epoch ...
    assert min(targets) <= context and max(targets) >= len(tokens) - context  # ... and all
    drawn = torch.cat([batches.draw() for _ in range(len(first) // 7 + 1)]).tolist()
    assert drawn[: len(first)] == first  # read in that order, then the next epoch's
    assert batches.epoch == 1 and batches.epoch_starts().tolist() != first
    saved = batches.state_dict()
    again = Batches(tokens, context, batch_size=7, seed=3, order="epochs")
    again.load_state_dict(saved)
    assert [again.draw().tolist() for _ in range(40)] == [
        batches.draw().tolist() for _ in range(40)
    ]
