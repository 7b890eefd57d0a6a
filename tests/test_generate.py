"""The decoding loop and the text layer: context window, stop strings, samples."""

from __future__ import annotations

from dataclasses import replace

import torch

from textgen.decode.completion import Completion, StopMatcher
from textgen.decode.loop import generate, truncate_to_window
from textgen.model.cpu_step import CpuStep
from textgen.settings import SampleConfig


def test_truncate_keeps_the_last_tokens():
    assert truncate_to_window([1, 2, 3, 4, 5], 3) == ([3, 4, 5], 2)
    assert truncate_to_window([1, 2], 3) == ([1, 2], 0)


def test_long_prompt_is_cut_to_its_last_context_window_tokens(lm):
    window = lm.model_config.context_window
    prompt = "The cat sees the moon. " * 40
    completion = Completion(lm, prompt, SampleConfig(max_new_tokens=3, seed=0))
    assert completion.prompt_tokens > window
    assert len(completion.prompt_ids) == window
    assert completion.dropped_tokens == completion.prompt_tokens + 1 - window
    expected_tail = lm.tokenizer.encode(prompt)[-window:]
    assert completion.prompt_ids == expected_tail
    assert len(list(completion)) >= 1


def _context_lengths(prompt_len: int, steps: int, window: int) -> list[int]:
    """How many tokens the model sees before each step, by the documented policy:
    grow to the window, then drop the oldest quarter and re-fill."""
    keep = window - max(1, window // 4)
    lengths, n = [], prompt_len
    for _ in range(steps):
        lengths.append(n)
        n = n + 1 if n < window else keep
    return lengths


def test_cached_generation_past_the_window_equals_uncached_recomputation(lm):
    window = lm.model_config.context_window
    prompt = [lm.tokenizer.eot_id, *lm.tokenizer.encode("The old fox")]
    steps = 3 * window
    settings = SampleConfig(temperature=0, max_new_tokens=steps)
    chosen = [s.token_ids[0].item() for s in generate(lm.model, prompt, settings)]
    assert len(chosen) == steps  # never crashed, never stopped early

    history = list(prompt)
    with torch.no_grad():
        for token, seen in zip(chosen, _context_lengths(len(prompt), steps, window), strict=True):
            assert seen <= window
            logits, _ = lm.model(torch.tensor([history[-seen:]]))
            assert token == logits[0, -1].argmax().item()
            history.append(token)


def test_generation_never_feeds_the_model_more_than_its_window(lm, monkeypatch):
    window = lm.model_config.context_window
    seen = []
    original, original_step = lm.model.forward, CpuStep.__call__

    def spy(ids, targets=None, cache=None, last_only=False):
        seen.append((cache.length if cache is not None else 0) + ids.shape[1])
        return original(ids, targets, cache, last_only)

    def step_spy(self, ids):
        seen.append(self.cache.length + 1)
        return original_step(self, ids)

    monkeypatch.setattr(lm.model, "forward", spy)
    monkeypatch.setattr(CpuStep, "__call__", step_spy)
    completion = Completion(lm, "A dog " * 100, SampleConfig(max_new_tokens=2 * window, seed=1))
    list(completion)
    assert max(seen) == window


def test_decoding_in_numpy_writes_the_text_pytorch_would(lm, monkeypatch):
    """On the CPU the steps after the prompt run in NumPy (`CpuStep`): the same seed gives
    the same tokens, past the window's slides, as the model's own forward passes."""
    prompt = lm.tokenizer.encode("The old fox")
    settings = SampleConfig(temperature=1.0, max_new_tokens=3 * lm.model_config.context_window)
    settings = replace(settings, seed=3, num_samples=2)

    def tokens() -> list[list[int]]:
        return [s.token_ids.tolist() for s in generate(lm.model, prompt, settings)]

    fast = tokens()
    monkeypatch.setattr(CpuStep, "for_model", staticmethod(lambda model: False))
    assert fast == tokens()


def test_stop_string_ends_the_text_before_it(lm):
    completion = Completion(lm, "The cat", SampleConfig(max_new_tokens=80, seed=3, stop=(".",)))
    list(completion)
    text = completion.samples[0].text
    assert "." not in text
    assert completion.samples[0].finish_reason in ("stop", "end_of_text")


def test_stop_matcher_holds_back_a_partial_stop_string():
    matcher = StopMatcher(("END",))
    assert matcher.feed("abc E") == "abc "
    assert matcher.feed("N") == ""
    assert matcher.feed("X more") == "ENX more"
    assert matcher.feed(" and EN") == " and "
    assert matcher.feed("D tail") == ""
    assert matcher.stopped
    assert matcher.flush() == ""


def test_stop_matcher_releases_held_text_at_the_end():
    matcher = StopMatcher(("STOP",))
    assert matcher.feed("ends with ST") == "ends with "
    assert matcher.flush() == "ST"


def test_num_samples_gives_independent_samples_in_one_batch(lm):
    settings = SampleConfig(temperature=1.2, max_new_tokens=30, seed=5, num_samples=3)
    completion = Completion(lm, "The bird", settings)
    records = list(completion)
    assert {r.sample for r in records} == {0, 1, 2}
    assert len({s.text for s in completion.samples}) == 3


def test_streamed_pieces_add_up_to_the_final_text(lm):
    completion = Completion(lm, "My friend", SampleConfig(max_new_tokens=50, seed=9))
    pieces = [r.text for r in completion]
    assert "".join(pieces) == completion.samples[0].text
    assert completion.samples[0].generated_tokens <= 50


def test_top_candidates_are_sorted_and_include_a_greedy_choice(lm):
    settings = SampleConfig(temperature=0, max_new_tokens=10, seed=0)
    for record in Completion(lm, "A child", settings, show_top=5):
        logprobs = [c.logprob for c in record.candidates]
        assert logprobs == sorted(logprobs, reverse=True)
        assert record.candidates[0].token_id == record.token_id
        assert record.candidates[0].prob == 1.0  # greedy: all probability on the argmax
        assert record.logprob == record.candidates[0].logprob <= 0


def test_half_precision_generation_runs_and_stays_close(lm, trained_folder):
    from textgen.store import folder as model_folder

    half = model_folder.load(trained_folder, dtype="bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16
    completion = Completion(half, "The cat", SampleConfig(temperature=0, max_new_tokens=20))
    records = list(completion)
    assert records and all(r.logprob <= 0 for r in records)
    ids = torch.tensor([lm.tokenizer.encode("The cat sees the moon")])
    with torch.no_grad():
        full = lm.model(ids)[0].log_softmax(-1)
        approx = half.model(ids)[0].log_softmax(-1)
    assert (full.exp() - approx.exp()).abs().max() < 0.05  # bf16 keeps ~3 digits


def test_auto_precision_keeps_small_models_exact_on_cpu(trained_folder):
    from textgen.store import folder as model_folder

    assert next(model_folder.load(trained_folder, dtype="auto").model.parameters()).dtype == (
        torch.float32
    )
