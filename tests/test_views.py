"""Seeing inside the model: JSON output, attention patterns, scoring, and every view
rendering cleanly at narrow and wide terminal widths."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from rich.console import Console

from textgen import render, views
from textgen.complete import Completion
from textgen.config import SampleConfig
from textgen.evaluate import evaluate, score_text, token_byte_lengths


@pytest.fixture(scope="module")
def completion(lm):
    c = Completion(
        lm, "The cat", SampleConfig(temperature=0.9, seed=4, max_new_tokens=25), show_top=5
    )
    list(c)
    return c


def test_json_sample_is_consistent(completion):
    data = json.loads(json.dumps(completion.to_json(0, "The cat")))
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
    patterns = lm.model.attention_patterns(ids)  # (layers, heads, T, T)
    T = ids.shape[1]
    assert patterns.shape == (lm.model_config.n_layer, lm.model_config.n_head, T, T)
    torch.testing.assert_close(patterns.sum(-1), torch.ones(patterns.shape[:-1]))
    assert torch.all(patterns.triu(diagonal=1) == 0)


def test_recording_attention_does_not_change_the_logits(lm):
    ids = torch.tensor([lm.tokenizer.encode("My friend follows the bird")])
    with torch.no_grad():
        before = lm.model(ids)[0]
        lm.model.attention_patterns(ids)
        after = lm.model(ids)[0]
    torch.testing.assert_close(before, after, rtol=0, atol=0)


def test_score_and_evaluate_agree_on_bits_per_byte(lm):
    text = "The cat sees the moon by the sea. A dog finds some bread. " * 8
    scored = score_text(lm, text)
    ids = np.array([lm.tokenizer.eot_id, *lm.tokenizer.encode(text)])
    evaluated = evaluate(lm.model, ids, token_byte_lengths(lm.tokenizer.token_bytes))
    assert len(ids) > lm.model_config.context_window  # crosses window boundaries
    assert scored.result.bits_per_byte == pytest.approx(evaluated.bits_per_byte, rel=1e-9)
    assert scored.result.bytes == len(text.encode("utf-8"))
    assert len(scored.nlls) == len(scored.token_ids) == len(ids) - 1


def test_probability_bands_colour_likely_and_unlikely_tokens_differently():
    assert views.prob_style(0.9) != views.prob_style(0.001)
    text = views.coloured([("likely", 0.9), ("rare", 0.001)])
    assert [span.style for span in text.spans] == [views.prob_style(0.9), views.prob_style(0.001)]


def _renderables(lm, completion):
    records = [r for r in completion.records[0] if r.token_id is not None]
    render_token = lm.tokenizer.render
    labels = [render_token(i) for i in [lm.tokenizer.eot_id, *lm.tokenizer.encode("The cat sees")]]
    n = len(labels)
    pattern = [[1 / (i + 1) if j <= i else 0.0 for j in range(n)] for i in range(n)]
    metrics = [
        {"step": s, "train_loss": 5 - s / 100, "val_loss": 5.2 - s / 120}
        for s in range(100, 600, 100)
    ]
    pieces = [(r.text, math.exp(r.logprob)) for r in records]
    summary = {
        "tokens": 9,
        "bytes": 30,
        "bits_per_byte": 1.5,
        "perplexity": 20.0,
        "mean_surprisal_bits": 4.3,
    }
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
        "top table": views.top_table(records, render_token, 5),
        "distribution": views.distribution(records[0], render_token, 0.9),
        "live": views.live_generation("The cat", pieces, records[-1], render_token, 0.9, 3),
        "surprisal": views.surprisal_view(pieces, summary),
        "heatmap": views.attention_heatmap(pattern, labels, 0, "layer 0, head 0"),
        "grid": views.attention_grid([pattern, pattern], labels, 0, 0),
        "curve": views.loss_curve(metrics),
        "info": render.info_panel("tiny", meta, 1234, metrics),
        "tokens": render.tokens_view(labels, stats),
        "eval": render.eval_table(
            {
                "corpus": "c",
                "tokens": 9,
                "bytes": 30,
                "loss": 2.0,
                "bits_per_byte": 1.0,
                "perplexity": 7.4,
            }
        ),
        "legend": views.prob_legend(),
    }


@pytest.mark.parametrize("width", [60, 200])
def test_every_view_renders_within_the_terminal_width(lm, completion, width):
    for name, renderable in _renderables(lm, completion).items():
        out = io.StringIO()
        console = Console(file=out, width=width, force_terminal=True, color_system="truecolor")
        console.print(renderable)
        plain = Console(file=io.StringIO(), width=width)
        plain.print(renderable)
        lines = plain.file.getvalue().splitlines()
        assert lines, name
        assert max(len(line) for line in lines) <= width, name
        assert "\x1b[" in out.getvalue(), name  # colour when allowed
