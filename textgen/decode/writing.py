"""Writing with the model a token at a time: the library behind `textgen write`.

A `Draft` is a text (a prompt, then the tokens added to it) and the model's next step
after it: its most likely tokens with their probabilities at the current temperature,
and the token it would sample. A person adds a token of their choice or the model's
own, takes the last one back, or changes the temperature; the draft keeps the KV cache
in step, so adding a token costs one decoding step and taking one back one prefill.

Every step is drawn from one generator seeded once, so the same seed and the same keys
give the same text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from textgen.decode.completion import prompt_window
from textgen.decode.loop import Window, advance, choose, new_seed, prefill
from textgen.model.loaded import LoadedModel
from textgen.records import Candidate
from textgen.settings import MAX_TEMPERATURE, SampleConfig
from textgen.text.tokenizer import StreamDecoder


@dataclass(frozen=True)
class NextStep:
    """What the model offers after the text: `candidates` most likely first (by the
    model's own probability; `prob` is at the draft's temperature and filters), and the
    token it sampled from that distribution."""

    candidates: list[Candidate]
    sampled: int
    sampled_prob: float


class Draft:
    """A text being written with the model. `text` is the prompt plus what was added."""

    def __init__(self, lm: LoadedModel, prompt: str, settings: SampleConfig, top: int) -> None:
        if settings.seed is None:  # fixed now, so the session can be told and repeated
            settings = replace(settings, seed=new_seed())
        self.lm, self.prompt, self.settings, self.top = lm, prompt, settings, top
        self.window_size = lm.model.config.context_window
        self.prompt_ids, _ = prompt_window(lm.tokenizer, prompt, self.window_size)
        # the tokens added to the prompt, oldest first, each with its probability under
        # the model (T = 1): one list of pairs, so a view reading it from another thread
        # never sees a token without its probability
        self._added: list[tuple[int, float]] = []
        self.generator = torch.Generator(device=next(lm.model.parameters()).device)
        self.generator.manual_seed(self.settings.seed)
        self._refill()

    @property
    def seed(self) -> int:
        return self.settings.seed  # type: ignore[return-value]

    @property
    def temperature(self) -> float:
        return self.settings.temperature

    @property
    def added(self) -> list[int]:
        return [token for token, _ in self._added]

    @property
    def ended(self) -> bool:
        """The last token added was the end-of-text token: the text is finished."""
        return bool(self._added) and self._added[-1][0] == self.lm.tokenizer.eot_id

    @property
    def text(self) -> str:
        """The prompt and the added tokens' text."""
        return self.prompt + "".join(piece for piece, _ in self.pieces())

    def pieces(self) -> list[tuple[str, float]]:
        """The added text token by token, each piece with the model's probability of its
        token (a character split over tokens comes with the token that completes it; the
        end-of-text token adds nothing)."""
        decoder, eot = StreamDecoder(self.lm.tokenizer.token_bytes), self.lm.tokenizer.eot_id
        return [
            ("" if token == eot else decoder.feed(token), prob) for token, prob in list(self._added)
        ]

    @torch.inference_mode()
    def add(self, token_id: int) -> None:
        """Add a token (of the model's vocabulary) to the text."""
        if not 0 <= token_id < self.lm.model.config.vocab_size:
            raise ValueError(f"token {token_id} is not in the vocabulary")
        prob = self._logits[0].float().softmax(-1)[token_id].item()
        self._added.append((token_id, prob))
        self._logits = advance(self.lm.model, self._window, torch.tensor([token_id]))
        self._choose()

    def add_sampled(self) -> int:
        """Add the token the model sampled for this step; returns it."""
        token = self.next.sampled
        self.add(token)
        return token

    def undo(self) -> bool:
        """Take the last added token back (the prompt stays); False if none was added."""
        if not self._added:
            return False
        self._added.pop()
        self._refill()
        return True

    def set_temperature(self, temperature: float) -> None:
        """A new temperature (0 to the cap) for this step and the ones after it."""
        temperature = round(min(max(temperature, 0.0), MAX_TEMPERATURE), 2)
        self.settings = replace(self.settings, temperature=temperature)
        self._choose()

    @torch.inference_mode()
    def _refill(self) -> None:
        """The cache rebuilt from the text's last window of tokens."""
        ids = (self.prompt_ids + self.added)[-self.window_size :]
        self._window = Window(self.lm.model, 1)
        self._logits = prefill(self.lm.model, self._window, ids)
        self._choose()

    @torch.inference_mode()
    def _choose(self) -> None:
        step = choose(self._logits, self._window.tokens, self.settings, self.generator, self.top)
        assert step.top_ids is not None and step.top_logprobs is not None
        assert step.top_probs is not None
        candidates = [
            Candidate(*c)
            for c in zip(
                step.top_ids[0].tolist(),
                step.top_logprobs[0].tolist(),
                step.top_probs[0].tolist(),
                strict=True,
            )
        ]
        self.next = NextStep(candidates, int(step.token_ids[0]), float(step.probs[0]))
