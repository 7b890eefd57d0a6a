"""Text in, text out: the library call behind `textgen generate`.

It tokenizes the prompt (after an end-of-text token, which marks the start of a text),
keeps its last context-window tokens, runs the decoding loop, turns token ids back into
text without splitting UTF-8 characters, and ends each sample at a stop string, at the
end-of-text token, or after `max_new_tokens`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from textgen.config import SampleConfig
from textgen.generate import generate, new_seed, truncate_to_window
from textgen.modeldir import LoadedModel
from textgen.tokenizer import StreamDecoder


@dataclass
class Candidate:
    token_id: int
    logprob: float  # under the model itself (temperature 1)
    prob: float  # in the distribution sampled from (after temperature and filters)


@dataclass
class TokenRecord:
    """One generated token of one sample: what it added to the text and how likely it was."""

    sample: int
    token_id: int | None  # None for the held-back text released when a sample ends
    text: str  # the text it completed ('' while a multi-byte character is incomplete)
    prob: float  # probability under the distribution it was sampled from
    logprob: float  # log-probability under the model itself (temperature 1)
    candidates: list[Candidate] = field(default_factory=list)  # the model's most likely first


class StopMatcher:
    """Streams text through, holding back anything that might be the start of a stop
    string, and cuts the text at the first stop string found."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped or not self.stops:
            return "" if self.stopped else piece
        self.pending += piece
        cut = min((i for s in self.stops if (i := self.pending.find(s)) >= 0), default=-1)
        if cut >= 0:
            out, self.pending, self.stopped = self.pending[:cut], "", True
            return out
        hold = max(
            (n for s in self.stops for n in range(1, len(s)) if self.pending.endswith(s[:n])),
            default=0,
        )
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def prompt_window(tokenizer, prompt: str, window: int) -> tuple[list[int], int | None]:
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
    prompt_ids = tokenizer.encode(prompt)
    ids, _ = truncate_to_window([tokenizer.eot_id, *prompt_ids], window)
    return ids, len(prompt_ids)


class Completion:
    """Iterate it for `TokenRecord`s; afterwards `texts` and `finish_reasons` hold the result.

    Before iterating, `prompt_tokens` and `dropped_tokens` tell how the prompt was read.
    """

    def __init__(
        self, lm: LoadedModel, prompt: str, settings: SampleConfig, show_top: int = 0
    ) -> None:
        self.lm, self.settings, self.show_top = lm, settings, show_top
        if settings.seed is None:  # fix it now so it can be reported and reused
            self.settings = replace(settings, seed=new_seed())
        window = lm.model.config.context_window
        self.prompt_ids, self.prompt_tokens = prompt_window(lm.tokenizer, prompt, window)
        self.truncated = self.prompt_tokens is None or self.prompt_tokens + 1 > window
        # tokens of the prompt left out (None: a very long prompt, not counted)
        self.dropped_tokens = (
            None if self.prompt_tokens is None else self.prompt_tokens + 1 - len(self.prompt_ids)
        )
        n = settings.num_samples
        self.texts = [""] * n
        self.records: list[list[TokenRecord]] = [[] for _ in range(n)]
        self.token_counts = [0] * n
        self.finish_reasons = ["length"] * n

    @property
    def seed(self) -> int:
        return self.settings.seed  # type: ignore[return-value]

    def __iter__(self) -> Iterator[TokenRecord]:
        tokenizer = self.lm.tokenizer
        n = self.settings.num_samples
        decoders = [StreamDecoder(tokenizer.token_bytes) for _ in range(n)]
        stops = [StopMatcher(self.settings.stop) for _ in range(n)]
        done = [False] * n
        steps = generate(
            self.lm.model, self.prompt_ids, self.settings, self.show_top, tokenizer.eot_id
        )
        for step in steps:
            ids = step.token_ids.tolist()
            probs, logprobs = step.probs.tolist(), step.logprobs.tolist()
            top = None
            if step.top_ids is not None:
                top = (step.top_ids.tolist(), step.top_logprobs.tolist(), step.top_probs.tolist())
            for i in range(n):
                if done[i]:
                    continue
                self.token_counts[i] += 1
                if ids[i] == tokenizer.eot_id:
                    piece = stops[i].feed(decoders[i].flush()) + stops[i].flush()
                    done[i], self.finish_reasons[i] = True, "end_of_text"
                else:
                    piece = stops[i].feed(decoders[i].feed(ids[i]))
                    if stops[i].stopped:
                        done[i], self.finish_reasons[i] = True, "stop"
                self.texts[i] += piece
                candidates = (
                    [Candidate(*c) for c in zip(top[0][i], top[1][i], top[2][i], strict=True)]
                    if top
                    else []
                )
                record = TokenRecord(i, ids[i], piece, probs[i], logprobs[i], candidates)
                self.records[i].append(record)
                yield record
            if all(done):
                steps.close()
                break
        for i in range(n):
            if not done[i]:
                tail = stops[i].feed(decoders[i].flush()) + stops[i].flush()
                self.texts[i] += tail
                if tail:
                    yield TokenRecord(i, None, tail, 1.0, 0.0)

    def to_json(self, sample: int, prompt: str) -> dict:
        """One sample as a JSON-ready dict: the text, the settings, token counts, and per
        generated token its id, text, log-probability under the model (T=1), probability
        in the distribution sampled from, and the model's top alternatives."""
        token_text = self.lm.tokenizer.token_text
        return {
            "model": str(self.lm.folder),
            "sample": sample,
            "prompt": prompt,
            "text": self.texts[sample],
            "finish_reason": self.finish_reasons[sample],
            "settings": {**self.settings.to_dict(), "stop": list(self.settings.stop)},
            "prompt_tokens": self.prompt_tokens,
            "prompt_tokens_dropped": self.dropped_tokens,
            "generated_tokens": self.token_counts[sample],
            "tokens": [
                {
                    "id": r.token_id,
                    "text": token_text(r.token_id),
                    "logprob": r.logprob,
                    "prob": r.prob,
                    "top": [
                        {
                            "id": c.token_id,
                            "text": token_text(c.token_id),
                            "logprob": c.logprob,
                            "prob": c.prob,
                        }
                        for c in r.candidates
                    ],
                }
                for r in self.records[sample]
                if r.token_id is not None
            ],
        }
