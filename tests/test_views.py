"""Seeing inside the model: JSON output, attention patterns, scoring, and every view
rendering cleanly at narrow and wide terminal widths."""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest
import torch
from rich.console import Console

from textgen.decode.completion import Completion
from textgen.inside.readout import attention_patterns
from textgen.records import EvalResult
from textgen.settings import SampleConfig
from textgen.training.evaluate import evaluate, score_text, token_byte_lengths
from textgen.ui import anatomy, generation, inspection, jsonout, models, style, training


@pytest.fixture(scope="module")
def completion(lm):
    c = Completion(
        lm, "The cat", SampleConfig(temperature=0.9, seed=4, max_new_tokens=25), show_top=5
    )
    list(c)
    return c


def test_json_sample_is_consistent(completion):
    record = jsonout.generation(completion.result(), 0, "tiny", completion.lm.tokenizer.token_text)
    data = json.loads(json.dumps(record))
    assert data["prompt"] == "The cat" and data["settings"]["temperature"] == 0.9
    assert data["generated_tokens"] == len(data["tokens"]) <= 25
    for token in data["tokens"]:
        assert token["logprob"] <= 0 and 0 <= token["prob"] <= 1
        top = [t["logprob"] for t in token["top"]]
        assert top == sorted(top, reverse=True) and len(top) == 5
        listed = {t["id"]: t["logprob"] for t in token["top"]}
        if token["id"] in listed:
            assert listed[token["id"]] == pytest.approx(token["logprob"], abs=1e-6)
        assert sum(math.exp(lp) for lp in top) <= 1 + 1e-5


def test_model_probabilities_over_the_whole_vocabulary_sum_to_one(lm):
    vocab = lm.model_config.vocab_size
    c = Completion(
        lm, "A dog", SampleConfig(temperature=1.3, max_new_tokens=3, seed=0), show_top=vocab
    )
    for record in c:
        assert sum(math.exp(x.logprob) for x in record.candidates) == pytest.approx(1, abs=1e-4)
        assert sum(x.prob for x in record.candidates) == pytest.approx(1, abs=1e-4)


def test_attention_rows_sum_to_one_and_never_look_ahead(lm):
    ids = torch.tensor([[lm.tokenizer.eot_id, *lm.tokenizer.encode("The old fox sees the moon")]])
    patterns = attention_patterns(lm.model, ids)  # (layers, heads, T, T)
    T = ids.shape[1]
    assert patterns.shape == (lm.model_config.n_layer, lm.model_config.n_head, T, T)
    torch.testing.assert_close(patterns.sum(-1), torch.ones(patterns.shape[:-1]))
    assert torch.all(patterns.triu(diagonal=1) == 0)


def test_reading_attention_out_leaves_the_model_as_it_was(lm):
    ids = torch.tensor([lm.tokenizer.encode("My friend follows the bird")])
    with torch.no_grad():
        before = lm.model(ids)[0]
        attention_patterns(lm.model, ids)
        after = lm.model(ids)[0]
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    assert not any(block.attn._forward_hooks for block in lm.model.blocks)


def test_score_and_evaluate_agree_on_bits_per_byte(lm):
    text = "The cat sees the moon by the sea. A dog finds some bread. " * 8
    scored = score_text(lm, text)
    ids = np.array([lm.tokenizer.eot_id, *lm.tokenizer.encode(text)])
    evaluated = evaluate(lm.model, ids, token_byte_lengths(lm.tokenizer.token_bytes)).result
    assert len(ids) > lm.model_config.context_window  # crosses window boundaries
    assert scored.result.bits_per_byte == pytest.approx(evaluated.bits_per_byte, rel=1e-9)
    assert scored.result.bytes == len(text.encode("utf-8"))
    assert len(scored.nlls) == len(scored.token_ids) == len(ids) - 1


def test_probability_bands_colour_likely_and_unlikely_tokens_differently():
    assert style.prob_style(0.9) != style.prob_style(0.001)
    text = style.coloured([("likely", 0.9), ("rare", 0.001)])
    assert [span.style for span in text.spans] == [style.prob_style(0.9), style.prob_style(0.001)]


def _renderables(lm, completion):
    records = [r for r in completion.samples[0].tokens if r.token_id is not None]
    render_token = lm.tokenizer.render
    labels = [render_token(i) for i in lm.tokenizer.encode_document("The cat sees")]
    n = len(labels)
    pattern = [[1 / (i + 1) if j <= i else 0.0 for j in range(n)] for i in range(n)]
    metrics = [
        {"step": s, "train_loss": 5 - s / 100, "val_loss": 5.2 - s / 120}
        for s in range(100, 600, 100)
    ]
    pieces = [(r.text, math.exp(r.logprob)) for r in records]
    result = EvalResult(loss=2.0, bits_per_byte=1.5, tokens=9, bytes=30)
    meta = {
        "model": lm.model_config.to_dict(),
        "tokenizer": {"vocab_size": 300},
        "training": {
            "steps": 200,
            "tokens_seen": 1000,
            "elapsed_seconds": 3.0,
            "val_loss": 2.0,
            "val_bits_per_byte": 1.2,
            "corpus": "c.txt",
        },
    }
    stats = {"tokens": 3, "bytes": 12, "words": 3, "bytes_per_token": 4.0, "tokens_per_word": 1.0}
    return {
        "top table": generation.top_table(records, render_token, 5),
        "distribution": generation.distribution(records[0], render_token, 0.9),
        "live": generation.live_generation("The cat", pieces, records[-1], render_token, 0.9, 3),
        "surprisal": inspection.surprisal_view(pieces, result),
        "heatmap": inspection.attention_heatmap(pattern, labels, 0, "layer 0, head 0"),
        "grid": inspection.attention_grid([pattern, pattern], labels, 0, 0),
        "curve": training.LossCurve(metrics),
        "info": models.info_panel("tiny", models.info_rows(meta, 1234, metrics), metrics),
        "tokens": inspection.tokens_view(labels, stats),
        "eval": inspection.eval_table("c", result),
        "legend": style.prob_legend(),
        **_anatomy_renderables(lm),
    }


def _anatomy_renderables(lm):
    from textgen.inside.embedding import neighbours
    from textgen.inside.heads import measure_heads, sample_windows
    from textgen.inside.readout import logit_lens

    render_token = lm.tokenizer.render
    ids = lm.tokenizer.encode_document("The old fox chases the red hat by the sea")
    reading = logit_lens(lm.model, ids, 10, 5)
    found = neighbours(lm.model, lm.tokenizer, "fox - dog + cat", 8)
    windows = sample_windows(lm.tokenizer, ["A dog sees the moon. " * 20], 32, 200)
    stats = measure_heads(lm.model, windows)
    return {
        "lens grid": anatomy.lens_grid(reading, render_token),
        "lens top": anatomy.lens_top(reading, render_token),
        "neighbours": anatomy.neighbours_view(found, render_token),
        "heads": anatomy.heads_table(stats, "200 tokens of a test"),
    }


@pytest.mark.parametrize("colours", ["truecolor", "256", "standard"])
@pytest.mark.parametrize("width", [40, 60, 200])
def test_every_view_renders_within_the_terminal_width(lm, completion, width, colours):
    for name, renderable in _renderables(lm, completion).items():
        out = io.StringIO()
        console = Console(file=out, width=width, force_terminal=True, color_system=colours)
        console.print(renderable)
        plain = Console(file=io.StringIO(), width=width)
        plain.print(renderable)
        lines = plain.file.getvalue().splitlines()
        assert lines, name
        assert max(len(line) for line in lines) <= width, name
        assert "\x1b[" in out.getvalue(), name  # colour when allowed


@pytest.mark.parametrize("colours", ["truecolor", "256", "standard"])
def test_neighbouring_tokens_never_share_a_background(colours):
    """In a 256- or 8-colour terminal, colours are rounded to the nearest the terminal has:
    the token backgrounds are chosen from those, so neighbours stay apart."""
    console = Console(file=io.StringIO(), force_terminal=True, color_system=colours, width=200)
    console.print(inspection.TokenBoundaries([f"t{i}" for i in range(8)]))
    codes = re.findall(r"\x1b\[([0-9;]+)mt\d", console.file.getvalue())
    assert len(codes) == 8
    assert all(a != b for a, b in zip(codes, codes[1:], strict=False))
