"""Properties that must hold for any input (hypothesis)."""

from __future__ import annotations

import io
import itertools
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textgen.cli.app import main
from textgen.decode.sampling import filter_logits, logits_to_probs
from textgen.settings import SampleConfig
from textgen.text.tokenizer import clean_text

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FAST
@given(st.text())
def test_tokenizer_round_trip_for_any_unicode_text(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


@FAST
@given(st.text(alphabet=st.characters(), min_size=1))
def test_any_string_even_with_lone_surrogates_round_trips_to_its_utf8_form(tokenizer, text):
    """Lone surrogates cannot be UTF-8: they come back as U+FFFD, everything else intact."""
    expected = clean_text(text)
    assert tokenizer.decode(tokenizer.encode(text)) == expected
    assert "".join(tokenizer.stream_decoder().decode_all(tokenizer.encode(text))) == expected


distinct_logits = (
    st.lists(st.floats(-20, 20, width=32), min_size=2, max_size=40)
    # ties are kept at a cut-off: keep values (and so probabilities) clearly apart
    .filter(lambda xs: all(b - a > 1e-3 for a, b in itertools.pairwise(sorted(xs))))
    .map(lambda xs: torch.tensor([xs]))
)


@FAST
@given(
    logits=distinct_logits,
    temperature=st.floats(0, 2),
    top_k=st.none() | st.integers(1, 50),
    top_p=st.none() | st.floats(1e-6, 1.0),
    min_p=st.none() | st.floats(0.0, 1.0),
    penalty=st.floats(0.5, 2.0),
)
def test_every_sampler_setting_gives_a_valid_distribution(
    logits, temperature, top_k, top_p, min_p, penalty
):
    config = SampleConfig(
        temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=penalty
    )
    probs = logits_to_probs(logits, config)
    assert torch.all(probs >= 0)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert probs[0, logits.argmax()] > 0  # the most likely token is never filtered out


@FAST
@given(logits=distinct_logits, k=st.integers(1, 50))
def test_top_k_keeps_exactly_the_k_largest(logits, k):
    kept = torch.isfinite(filter_logits(logits, top_k=k))[0]
    expected = torch.zeros_like(kept)
    expected[torch.topk(logits[0], min(k, logits.size(-1))).indices] = True
    assert torch.equal(kept, expected)


@FAST
@given(logits=distinct_logits, p=st.floats(1e-6, 1.0))
def test_top_p_keeps_the_smallest_prefix_reaching_p(logits, p):
    kept = torch.isfinite(filter_logits(logits, top_p=p))[0]
    probs = logits.softmax(-1)[0]
    order = probs.argsort(descending=True)
    n_kept = int(kept.sum())
    assert torch.all(kept[order[:n_kept]])  # the kept set is the most likely ones
    mass = probs[order].cumsum(0)
    if n_kept > 1:
        assert mass[n_kept - 2] < p + 1e-6  # one fewer would not reach p
    assert mass[n_kept - 1] >= min(p, 1.0) - 1e-5 or n_kept == len(probs)


@FAST
@given(logits=distinct_logits, m=st.floats(0.0, 1.0))
def test_min_p_keeps_exactly_the_tokens_above_the_threshold(logits, m):
    kept = torch.isfinite(filter_logits(logits, min_p=m))[0]
    probs = logits.softmax(-1)[0]
    assert torch.equal(kept, probs >= m * probs.max())


@FAST
@given(logits=st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=20, unique=True))
def test_temperature_towards_zero_tends_to_argmax(logits):
    x = torch.tensor([logits])
    top_two = torch.topk(x[0], 2).values
    if top_two[0] - top_two[1] < 0.05:
        return  # too close to separate at the smallest temperature tried
    cold = logits_to_probs(x, SampleConfig(temperature=0.002))[0]
    assert cold[x.argmax()] > 0.99
    assert torch.equal(logits_to_probs(x, SampleConfig(temperature=0))[0].argmax(), x.argmax())


option_value = st.text(max_size=12) | st.floats(allow_nan=True).map(str) | st.integers().map(str)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    option=st.sampled_from(
        [
            "--temperature",
            "--top-k",
            "--top-p",
            "--min-p",
            "-n",
            "--seed",
            "--num-samples",
            "--show-top",
            "--repetition-penalty",
            "--stop",
        ]
    ),
    value=option_value,
)
def test_the_cli_never_prints_a_traceback_for_any_option_value(
    capsys, monkeypatch, tmp_path, option, value
):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "x", "--model", str(tmp_path / "absent"), option, value])
    err = capsys.readouterr().err
    assert exit_info.value.code in (1, 2)
    assert "Traceback" not in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1
