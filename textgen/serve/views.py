"""What the answer to a request looks like, for the completions and the chat endpoints:
whole, or as the chunks of a stream, in OpenAI's shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from textgen.decode.scoring import token_logprobs
from textgen.records import Sample, TokenRecord
from textgen.serve import protocol
from textgen.serve.protocol import ChatRequest, CompletionRequest
from textgen.serve.registry import Served
from textgen.serve.runs import Prompt, Run
from textgen.text.tokenizer import StreamDecoder


class View:
    """What the answer to a request looks like: whole (`answer`), or as stream chunks
    (`chunks`, shaped by each view's `opening`, `token` and `closing`)."""

    kind, chunk_kind, prefix = "", "", ""

    def __init__(self, served: Served, body, prompts: list[Prompt]) -> None:  # noqa: ANN001
        self.served, self.body, self.prompts = served, body, prompts
        self.id, self.created = protocol.new_id(self.prefix), protocol.now()
        self.tokenizer = served.lm.tokenizer

    def envelope(self, choices: list[dict], kind: str | None = None, **extra: Any) -> dict:
        return {
            "id": self.id,
            "object": kind or self.kind,
            "created": self.created,
            "model": self.served.name,
            "choices": choices,
            **extra,
        }

    def usage(self, completion_tokens: int) -> dict[str, int]:
        n = self.body.n
        return protocol.usage(
            sum(p.tokens for p in self.prompts) * n,
            completion_tokens,
            sum(p.dropped for p in self.prompts) * n,
        )

    async def gather(self, run: Run, request: Request) -> tuple[list[list[TokenRecord]], list]:
        records: list[list[TokenRecord]] = [[] for _ in run.jobs]
        samples: list[Sample | None] = [None] * len(run.jobs)
        async for item in run.events(request):
            if item is None:
                continue
            index, record, sample = item
            if record is None:
                samples[index] = sample
            else:
                records[index].append(record)
        return records, samples

    async def chunks(self, run: Run, request: Request) -> AsyncIterator[dict[str, Any] | None]:
        """The stream: each choice's opening chunk, one chunk a token (None after each
        batch of them: the moment to write), its closing chunk, and the usage if asked."""
        generated = 0
        for index in range(len(run.jobs)):
            if (fields := self.opening(index)) is not None:
                yield self.chunk(index, fields)
        async for item in run.events(request):
            if item is None:
                yield None
                continue
            index, record, sample = item
            if record is None:
                generated += sample.generated_tokens
                yield self.chunk(index, self.closing(sample))
            elif (fields := self.token(index, record)) is not None:
                yield self.chunk(index, fields)
        if self.body.include_usage():
            yield self.envelope([], self.chunk_kind, usage=self.usage(generated))

    def chunk(self, index: int, fields: dict[str, Any]) -> dict[str, Any]:
        return self.envelope([{"index": index, **fields}], self.chunk_kind)

    def opening(self, index: int) -> dict[str, Any] | None:
        return None

    def token(self, index: int, record: TokenRecord) -> dict[str, Any] | None:
        raise NotImplementedError

    def closing(self, sample: Sample) -> dict[str, Any]:
        raise NotImplementedError


class CompletionView(View):
    kind = chunk_kind = "text_completion"
    prefix = "cmpl"

    def __init__(self, served: Served, body: CompletionRequest, prompts: list[Prompt]) -> None:
        super().__init__(served, body, prompts)
        n = len(prompts) * body.n
        self.offsets = [len(self.prefix_text(i)) for i in range(n)]  # of each choice's text
        self.echoed: list[dict | None] = [None] * len(prompts)  # see `score_prompts`

    def score_prompts(self) -> None:
        """With `echo` and `logprobs`: each prompt's own tokens and their log-probabilities
        (blocking: call it off the event loop). The first token's is given the start of
        a text, the end-of-text marker the model reads before every prompt."""
        if not (self.body.echo and self.body.logprobs is not None):
            return
        for i, prompt in enumerate(self.prompts):
            decoder = StreamDecoder(self.tokenizer.token_bytes)
            ids = prompt.scored_ids(self.served)
            records = token_logprobs(self.served.lm.model, ids, decoder, self.body.logprobs)
            kept = sum(len(r.text) for r in records)  # a prompt cut to the window: its end
            self.echoed[i] = self.logprobs(records, len(prompt.text) - kept)

    def prefix_text(self, index: int) -> str:
        return self.prompts[index // self.body.n].text if self.body.echo else ""

    def logprobs(self, records: list[TokenRecord], offset: int) -> dict | None:
        if self.body.logprobs is None:
            return None
        return protocol.completion_logprobs(records, self.tokenizer.token_text, offset)

    async def answer(self, run: Run, request: Request) -> dict[str, Any]:
        records, samples = await self.gather(run, request)
        choices = []
        for index, (tokens, sample) in enumerate(zip(records, samples, strict=True)):
            prefix = self.prefix_text(index)
            logprobs = self.logprobs(tokens, len(prefix))
            echoed = self.echoed[index // self.body.n]
            choices.append(
                {
                    "index": index,
                    "text": prefix + "".join(r.text for r in tokens),
                    "logprobs": protocol.joined_logprobs(echoed, logprobs),
                    "finish_reason": protocol.finish_reason(sample) if sample else None,
                }
            )
        generated = sum(s.generated_tokens for s in samples if s)
        return self.envelope(choices, usage=self.usage(generated))

    def opening(self, index: int) -> dict[str, Any] | None:
        if not self.body.echo:
            return None
        logprobs = self.echoed[index // self.body.n]
        return {"text": self.prefix_text(index), "logprobs": logprobs, "finish_reason": None}

    def token(self, index: int, record: TokenRecord) -> dict[str, Any] | None:
        if not record.text and self.body.logprobs is None:
            return None  # a character still incomplete: nothing to send yet
        logprobs = self.logprobs([record], self.offsets[index])
        self.offsets[index] += len(record.text)
        return {"text": record.text, "logprobs": logprobs, "finish_reason": None}

    def closing(self, sample: Sample) -> dict[str, Any]:
        return {"text": "", "logprobs": None, "finish_reason": protocol.finish_reason(sample)}


class ChatView(View):
    kind, chunk_kind, prefix = "chat.completion", "chat.completion.chunk", "chatcmpl"

    def __init__(self, served: Served, body: ChatRequest, prompt: Prompt) -> None:
        super().__init__(served, body, [prompt])
        self.started = [False] * body.n  # whether a choice's text has begun

    def logprobs(self, records: list[TokenRecord]) -> dict | None:
        if not self.body.logprobs:
            return None
        return protocol.chat_logprobs(
            records, self.tokenizer.token_bytes, self.tokenizer.token_text
        )

    async def answer(self, run: Run, request: Request) -> dict[str, Any]:
        records, samples = await self.gather(run, request)
        choices = [
            {
                "index": index,
                "message": {
                    "role": "assistant",
                    # as the stream sends it: from the first character that is not space
                    "content": "".join(r.text for r in tokens).lstrip(),
                },
                "logprobs": self.logprobs(tokens),
                "finish_reason": protocol.finish_reason(sample) if sample else None,
            }
            for index, (tokens, sample) in enumerate(zip(records, samples, strict=True))
        ]
        generated = sum(s.generated_tokens for s in samples if s)
        return self.envelope(choices, usage=self.usage(generated))

    def opening(self, index: int) -> dict[str, Any]:
        return {
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }

    def token(self, index: int, record: TokenRecord) -> dict[str, Any] | None:
        text = record.text if self.started[index] else record.text.lstrip()
        self.started[index] = self.started[index] or bool(text)
        if not text and not self.body.logprobs:
            return None
        return {
            "delta": {"content": text},
            "logprobs": self.logprobs([record]),
            "finish_reason": None,
        }

    def closing(self, sample: Sample) -> dict[str, Any]:
        return {"delta": {}, "logprobs": None, "finish_reason": protocol.finish_reason(sample)}
