"""Text in, text out: the library call behind `textgen generate`.

It tokenizes the prompt (after an end-of-text token, which marks the start of a text),
keeps its last context-window tokens, runs the decoding loop, turns token ids back into
text without splitting UTF-8 characters, and ends each sample at a stop string, at the
end-of-text token, or after `max_new_tokens`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from textgen.decode.loop import Step, generate, new_seed, truncate_to_window
from textgen.model.loaded import LoadedModel
from textgen.model.memory import check_fits, decoding_bytes
from textgen.records import Candidate, Generation, Sample, TokenRecord
from textgen.settings import SampleConfig
from textgen.text.tokenizer import StreamDecoder, Tokenizer


class StopMatcher:
    """Streams text through, holding back anything that might be the start of a stop
    string, and cuts the text before the first stop string to appear (the one whose end
    comes first; of those ending together, the longest).

    Matching is incremental (Knuth-Morris-Pratt): each stop string keeps how much of it
    the text now ends with, so every character costs a step per stop string, whatever
    their length, and the text held back is never longer than the longest of them.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.fallbacks = [_fallbacks(s) for s in stops]
        self.matched = [0] * len(stops)  # of each stop, the length of its prefix the text ends with
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped or not self.stops:
            return "" if self.stopped else piece
        text = self.pending + piece
        for at, char in enumerate(piece, start=len(self.pending)):
            complete = [self._step(k, char) for k in range(len(self.stops))]
            if any(complete):
                longest = max(len(s) for s, done in zip(self.stops, complete, strict=True) if done)
                self.pending, self.stopped = "", True
                return text[: at + 1 - longest]
        hold = max(self.matched)
        self.pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def _step(self, k: int, char: str) -> bool:
        """Extend stop k's match by `char`; whether it is now complete."""
        stop, fallback, n = self.stops[k], self.fallbacks[k], self.matched[k]
        while n and stop[n] != char:
            n = fallback[n - 1]
        if stop[n] == char:
            n += 1
        self.matched[k] = n
        return n == len(stop)

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def _fallbacks(stop: str) -> list[int]:
    """KMP's failure table: for each prefix of `stop`, the length of its longest proper
    prefix that is also its suffix ("abab" -> [0, 0, 1, 2])."""
    table, n = [0] * len(stop), 0
    for i in range(1, len(stop)):
        while n and stop[i] != stop[n]:
            n = table[n - 1]
        if stop[i] == stop[n]:
            n += 1
        table[i] = n
    return table


def prompt_window(tokenizer: Tokenizer, prompt: str, window: int) -> tuple[list[int], int | None]:
    """The ids the model sees for `prompt` (after the end-of-text marker), at most `window`
    of them, and the prompt's token count (None where it was not counted).

    A prompt far longer than the window is only tokenized from its end: a tail of (window
    + 64) x the longest token's length in characters holds more than a window of tokens,
    and tokenization differs only around its first word, which is dropped. Memory stays
    bounded by the window, not by the prompt.
    """
    tail_chars = (window + 64) * tokenizer.max_token_bytes
    if len(prompt) > 4 * tail_chars:
        return tokenizer.encode(prompt[-tail_chars:])[-window:], None
    ids = tokenizer.encode_document(prompt)
    return truncate_to_window(ids, window)[0], len(ids) - 1


class Completion:
    """Iterate it for `TokenRecord`s as they are generated; afterwards `samples` holds the
    text, tokens and finish reason of each sample, and `result()` the whole as plain data.

    Before iterating, `prompt_tokens` and `dropped_tokens` tell how the prompt was read.
    """

    def __init__(
        self, lm: LoadedModel, prompt: str, settings: SampleConfig, show_top: int = 0
    ) -> None:
        self.lm, self.prompt, self.show_top = lm, prompt, show_top
        if settings.seed is None:  # fix it now so it can be reported and reused
            settings = replace(settings, seed=new_seed())
        self.settings = settings
        window = lm.model.config.context_window
        self.prompt_ids, self.prompt_tokens = prompt_window(lm.tokenizer, prompt, window)
        self.truncated = self.prompt_tokens is None or self.prompt_tokens + 1 > window
        # tokens of the prompt left out (None: a very long prompt, not counted)
        self.dropped_tokens = (
            None if self.prompt_tokens is None else self.prompt_tokens + 1 - len(self.prompt_ids)
        )
        parameter = next(lm.model.parameters())
        check_fits(
            decoding_bytes(lm.model.config, settings.num_samples, parameter.element_size()),
            parameter.device,
            f"{settings.num_samples:,} samples at once",
            "num_samples",
        )
        self.samples = [Sample() for _ in range(settings.num_samples)]

    @property
    def seed(self) -> int:
        return self.settings.seed  # type: ignore[return-value]

    def result(self) -> Generation:
        return Generation(
            self.prompt, self.prompt_tokens, self.dropped_tokens, self.settings, self.samples
        )

    def __iter__(self) -> Iterator[TokenRecord]:
        tokenizer = self.lm.tokenizer
        texts = [
            SampleText(tokenizer, self.settings.stop, i, sample)
            for i, sample in enumerate(self.samples)
        ]
        steps = generate(
            self.lm.model, self.prompt_ids, self.settings, self.show_top, tokenizer.eot_id
        )
        for step in steps:
            for text, choice in zip(texts, step_choices(step), strict=True):
                if not text.done:
                    yield text.add(*choice)
            if all(text.done for text in texts):
                steps.close()
                break
        for text in texts:
            tail = text.finish()
            if tail is not None:
                yield tail


def step_choices(step: Step) -> list[tuple[int, float, float, list[Candidate]]]:
    """A decoding step as plain numbers, one (token, prob, logprob, candidates) per row."""
    ids = step.token_ids.tolist()
    probs, logprobs = step.probs.tolist(), step.logprobs.tolist()
    top = None
    if step.top_ids is not None:
        top = (step.top_ids.tolist(), step.top_logprobs.tolist(), step.top_probs.tolist())
    return [
        (
            ids[i],
            probs[i],
            logprobs[i],
            [Candidate(*c) for c in zip(top[0][i], top[1][i], top[2][i], strict=True)]
            if top
            else [],
        )
        for i in range(len(ids))
    ]


class SampleText:
    """One sample's tokens turned into text as they come: a character split over tokens
    held back until it is whole, the text cut before a stop string, and the sample ended
    by the end-of-text token. Fills a `Sample` record."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        stops: tuple[str, ...],
        index: int = 0,
        sample: Sample | None = None,
    ) -> None:
        self.decoder = StreamDecoder(tokenizer.token_bytes)
        self.stops = StopMatcher(stops)
        self.eot_id, self.index = tokenizer.eot_id, index
        self.sample = sample if sample is not None else Sample()
        self.done = False

    def add(
        self, token_id: int, prob: float, logprob: float, candidates: list[Candidate]
    ) -> TokenRecord:
        """The next token: the record of what it added to the text."""
        self.sample.generated_tokens += 1
        if token_id == self.eot_id:
            piece = self.stops.feed(self.decoder.flush()) + self.stops.flush()
            self.done, self.sample.finish_reason = True, "end_of_text"
        else:
            piece = self.stops.feed(self.decoder.feed(token_id))
            if self.stops.stopped:
                self.done, self.sample.finish_reason = True, "stop"
        return self._record(TokenRecord(self.index, token_id, piece, prob, logprob, candidates))

    def finish(self) -> TokenRecord | None:
        """The sample ends (no more tokens): the text held back, if any."""
        if self.done:
            return None
        self.done = True
        tail = self.stops.feed(self.decoder.flush()) + self.stops.flush()
        return self._record(TokenRecord(self.index, None, tail, 1.0, 0.0)) if tail else None

    def _record(self, record: TokenRecord) -> TokenRecord:
        self.sample.text += record.text
        self.sample.tokens.append(record)
        return record
