"""Many requests decoding at once (`textgen.decode.batching`): each gets exactly the text
it would get alone, and the text `textgen generate` writes, whoever shares its batch."""

from __future__ import annotations

import threading

import pytest

from textgen.decode.batching import BatchEngine, EngineBusy, Job
from textgen.decode.completion import Completion, prompt_window
from textgen.settings import SampleConfig

PROMPTS = ["The cat sees", "a dog", "My friend likes the old fox and", "the bird"]


class Collector:
    """What a job emits, and when it ended."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.sample = None
        self.ended = threading.Event()

    def __call__(self, record, sample) -> None:  # noqa: ANN001
        if record is None:
            self.sample = sample
            self.ended.set()
        else:
            self.pieces.append(record.text)

    @property
    def text(self) -> str:
        assert self.ended.wait(60)
        return "".join(self.pieces)


def submit(engine: BatchEngine, lm, prompt: str, **settings) -> Collector:  # noqa: ANN001
    collector = Collector()
    ids, _ = prompt_window(lm.tokenizer, prompt, lm.model_config.context_window)
    engine.submit(Job(ids, SampleConfig(**settings), collector))
    return collector


def generated(lm, prompt: str, **settings) -> str:  # noqa: ANN001
    completion = Completion(lm, prompt, SampleConfig(**settings))
    list(completion)
    return completion.samples[0].text


CASES = [  # (prompt, settings): past the 32-token window, stops, penalties, top-k/p
    (PROMPTS[i % 4], dict(temperature=t, seed=i, max_new_tokens=70, **extra))
    for i, (t, extra) in enumerate(
        [
            (1.0, {}),
            (0.0, {}),
            (1.3, {"top_k": 5}),
            (0.8, {"top_p": 0.9}),
            (1.0, {"repetition_penalty": 1.3}),
            (1.0, {"stop": ["."]}),
            (2.0, {"min_p": 0.05}),
            (0.5, {}),
        ]
        * 2
    )
]


@pytest.fixture(scope="module")
def engine(lm):
    engine = BatchEngine(lm, slots=6, queue=64)
    yield engine
    engine.close()


def test_each_request_gets_its_text_alone_or_among_others(engine, lm):
    alone = [submit(engine, lm, prompt, **settings).text for prompt, settings in CASES]
    together = [submit(engine, lm, prompt, **settings) for prompt, settings in CASES]
    assert [c.text for c in together] == alone
    assert alone == [generated(lm, prompt, **settings) for prompt, settings in CASES]
    assert "." not in alone[5]


def test_a_request_ends_as_textgen_generate_says(engine, lm):
    ended = submit(engine, lm, PROMPTS[0], seed=1, max_new_tokens=9)
    assert ended.text and ended.sample.finish_reason == "length"
    assert ended.sample.generated_tokens == 9
    nothing = submit(engine, lm, PROMPTS[0], seed=1, max_new_tokens=0)
    assert nothing.text == "" and nothing.sample.generated_tokens == 0


def test_a_cancelled_request_frees_its_slot_for_one_waiting(lm):
    engine = BatchEngine(lm, slots=1, queue=4)
    try:
        first = Collector()
        ids = lm.tokenizer.encode(PROMPTS[0])
        job = Job(ids, SampleConfig(seed=0, max_new_tokens=10**6), first)
        engine.submit(job)
        waiting = submit(engine, lm, PROMPTS[1], seed=2, max_new_tokens=12)
        while not first.pieces:
            first.ended.wait(0.01)
        job.cancel()
        assert waiting.text == generated(lm, PROMPTS[1], seed=2, max_new_tokens=12)
        assert first.sample.finish_reason == "cancelled"
        assert engine.busy() == 0
    finally:
        engine.close()


def test_a_full_queue_says_busy_instead_of_growing(lm):
    engine = BatchEngine(lm, slots=1, queue=2)
    try:
        forever = SampleConfig(seed=0, max_new_tokens=10**6)
        jobs = [Job(lm.tokenizer.encode("a"), forever, Collector()) for _ in range(3)]
        for job in jobs:
            engine.submit(job)
        with pytest.raises(EngineBusy, match="try again"):
            engine.submit(Job(lm.tokenizer.encode("a"), forever, Collector()))
    finally:
        engine.close()
    # closing ends every request, running or waiting, as cancelled
    assert all(job.emit.sample.finish_reason == "cancelled" for job in jobs)
    with pytest.raises(EngineBusy, match="stopping"):
        engine.submit(Job(lm.tokenizer.encode("a"), forever, Collector()))
