"""Sampling: temperature, filters, seeds, and the limits on settings."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from textgen.decode.completion import Completion
from textgen.decode.sampling import (
    apply_repetition_penalty,
    filter_logits,
    logits_to_probs,
    sample,
)
from textgen.errors import SettingError
from textgen.settings import SampleConfig

LOGITS = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])


def test_temperature_zero_is_argmax():
    probs = logits_to_probs(LOGITS, SampleConfig(temperature=0))
    assert probs.argmax().item() == 0 and probs[0, 0].item() == 1.0
    assert sample(probs).item() == 0


def test_low_temperature_sharpens_and_high_temperature_flattens():
    p1 = logits_to_probs(LOGITS, SampleConfig(temperature=1.0))[0, 0]
    low = logits_to_probs(LOGITS, SampleConfig(temperature=0.5))[0, 0]
    high = logits_to_probs(LOGITS, SampleConfig(temperature=2.0))[0, 0]
    assert high < p1 < low


@pytest.mark.parametrize("bad", [-0.1, 2.01, 3.0, math.nan, math.inf])
def test_temperature_outside_zero_to_two_is_rejected_naming_the_cap(bad):
    with pytest.raises(SettingError, match=r"between 0 and 2 .*2 is the cap"):
        SampleConfig(temperature=bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(top_k=0),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(max_new_tokens=-1),
        dict(num_samples=0),
        dict(min_p=2.0),
        dict(stop=("",)),
    ],
)
def test_out_of_range_settings_are_rejected_naming_the_setting(kwargs):
    with pytest.raises(SettingError) as refused:
        SampleConfig(**kwargs)
    (name,) = kwargs
    assert refused.value.setting == name
    assert refused.value.phrased("--" + name) != refused.value.phrased(name)  # each front end
    assert str(refused.value) == refused.value.phrased(name)  # plain: the field's own name


def test_top_k_keeps_exactly_the_k_most_likely():
    kept = torch.isfinite(filter_logits(LOGITS, top_k=3))[0]
    assert kept.tolist() == [True, True, True, False, False, False]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = LOGITS.softmax(-1)[0]
    p = probs[0].item() + probs[1].item() - 1e-4  # the first two just reach p
    kept = torch.isfinite(filter_logits(LOGITS, top_p=p))[0]
    assert kept.tolist() == [True, True, False, False, False, False]
    assert torch.isfinite(filter_logits(LOGITS, top_p=1e-9))[0].sum() == 1  # top one stays


def test_min_p_drops_tokens_far_below_the_top_one():
    kept = torch.isfinite(filter_logits(LOGITS, min_p=0.3))[0]  # keeps p >= 0.3 * p_max
    probs = LOGITS.softmax(-1)[0]
    assert kept.tolist() == (probs >= 0.3 * probs.max()).tolist()


def test_filtered_distribution_is_valid():
    settings = SampleConfig(temperature=1.3, top_k=4, top_p=0.9, min_p=0.05)
    probs = logits_to_probs(LOGITS, settings)
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0))


def test_repetition_penalty_lowers_seen_tokens_only():
    out = apply_repetition_penalty(LOGITS, torch.tensor([[0, 4]]), 2.0)
    assert out[0, 0] == 1.0 and out[0, 4] == -2.0  # 2.0 / 2 and -1.0 * 2
    assert torch.equal(out[0, 1:4], LOGITS[0, 1:4])


def _text(lm, prompt, **settings) -> str:
    completion = Completion(lm, prompt, SampleConfig(**settings))
    list(completion)
    return completion.samples[0].text


def test_same_seed_gives_the_same_text(lm):
    a = _text(lm, "The cat", temperature=1.0, seed=42, max_new_tokens=40)
    b = _text(lm, "The cat", temperature=1.0, seed=42, max_new_tokens=40)
    c = _text(lm, "The cat", temperature=1.0, seed=43, max_new_tokens=40)
    assert a == b
    assert a != c


def test_greedy_generation_follows_the_argmax_of_the_model(lm):
    completion = Completion(lm, "The dog", SampleConfig(temperature=0, max_new_tokens=12))
    chosen = [r.token_id for r in completion]
    ids = list(completion.prompt_ids)
    with torch.no_grad():
        for token in chosen:
            logits, _ = lm.model(torch.tensor([ids[-lm.model_config.context_window :]]))
            assert token == logits[0, -1].argmax().item()
            ids.append(token)


def test_settings_that_change_the_distribution_never_share_a_batch_group():
    """The batch engine samples rows together when their `distribution()` is equal: every
    setting but length, seed, stops and count must take part in it, new ones included."""
    base = SampleConfig()
    changed = {
        "temperature": 1.3,
        "top_k": 5,
        "top_p": 0.5,
        "min_p": 0.1,
        "repetition_penalty": 1.2,
        "max_new_tokens": 7,
        "seed": 3,
        "stop": ("x",),
        "num_samples": 2,
        "logit_bias": ((1, 2.0),),
    }
    assert set(changed) == {f.name for f in dataclasses.fields(SampleConfig)}
    for name, value in changed.items():
        other = dataclasses.replace(base, **{name: value})
        apart = other.distribution() != base.distribution()
        assert apart == (name not in ("max_new_tokens", "seed", "stop", "num_samples")), name
