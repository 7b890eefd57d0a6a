"""The OpenAI API as textgen speaks it: request bodies (checked field by field), the
error shape, and the response objects and stream chunks of completions and chats.

textgen's models are base models: they continue text. A chat becomes a plain-text
transcript (`chat_prompt`) that the model continues as the assistant, stopped before it
writes the user's next turn.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from textgen.errors import SettingError
from textgen.records import Sample, TokenRecord
from textgen.settings import MAX_STOP_CHARS, SampleConfig

MAX_LOGPROBS = 20
# The request fields whose names are not their setting's (`textgen.settings`).
API_NAMES = {"max_new_tokens": "max_tokens", "num_samples": "n"}


def api_name(setting: str | None) -> str | None:
    """The request field that carries `setting` (max_new_tokens -> max_tokens)."""
    return API_NAMES.get(setting, setting) if setting else None


def _unicode(text: str) -> str:
    """JSON's \\u escapes can spell half a UTF-16 pair, which is no character: refused."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"not valid Unicode (a lone surrogate, \\u{ord(text[exc.start]):04x}, at "
            f"character {exc.start})"
        ) from None
    return text


Text = Annotated[str, AfterValidator(_unicode)]  # every string a request sends


class Limits(BaseModel):
    """What one request may ask for (each a 400 error past it) and how many may wait."""

    prompt_bytes: int = 1 << 20
    body_bytes: int = 8 << 20  # the whole JSON body, refused (413) before it is read past
    max_tokens: int = 2048
    n: int = 8


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields of their own

    model: Text
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)  # chat's newer name
    temperature: float = 1.0  # OpenAI's default
    top_p: float = 1.0
    top_k: int | None = None  # textgen's extensions: top_k, min_p, repetition_penalty
    min_p: float | None = None
    repetition_penalty: float = 1.0
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: Text | list[Text] | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[Text, float] | None = None  # token id (as a string) -> -100 .. 100
    # accepted by OpenAI, not done here: refused (400) rather than silently ignored
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: Any = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:  # OpenAI's bound
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4 or not all(stops) or any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(
                f"stop takes up to 4 non-empty strings of up to {MAX_STOP_CHARS:,} characters"
            )
        return stops

    def sampling(
        self, default_tokens: int, vocab_size: int, extra_stops: tuple[str, ...] = ()
    ) -> SampleConfig:
        """The request's sampling settings, checked as the CLI checks them (`vocab_size`:
        the model's, for the token ids of `logit_bias`)."""
        self._refuse_unsupported()
        if self.presence_penalty or self.frequency_penalty:
            raise SettingError(
                "{name}: not supported; textgen has repetition_penalty (above 1 discourages "
                "repeats)",
                "presence_penalty" if self.presence_penalty else "frequency_penalty",
            )
        tokens = self.max_completion_tokens or self.max_tokens
        return SampleConfig(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            max_new_tokens=default_tokens if tokens is None else tokens,
            seed=self.seed,
            stop=tuple(self.stop or ()) + extra_stops,  # type: ignore[arg-type]
            logit_bias=self._bias(vocab_size),
        )

    def _bias(self, vocab_size: int) -> tuple[tuple[int, float], ...]:
        bias = []
        for key, value in (self.logit_bias or {}).items():
            if not key.strip().isdigit() or int(key) >= vocab_size:
                raise SettingError(
                    f"{{name}}: {key[:20]!r} is not a token id of this model (0 to "
                    f"{vocab_size - 1})",
                    "logit_bias",
                )
            bias.append((int(key), value))
        return tuple(bias)

    def _refuse_unsupported(self) -> None:
        """What OpenAI's API takes and textgen does not do: a 400 naming it, never a
        silent default."""
        wanted = {
            "tools": self.tools not in (None, []),
            "tool_choice": self.tool_choice not in (None, "none", "auto"),
            "functions": self.functions not in (None, []),
            "function_call": self.function_call not in (None, "none", "auto"),
            "response_format": self.response_format not in (None, {"type": "text"}),
        }
        for name, asked in wanted.items():
            if asked:
                raise SettingError(
                    "{name}: not supported; textgen's models continue text, they call no "
                    "tools and follow no schema",
                    name,
                )

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Request):
    prompt: Text | list[Text] | list[int] | list[list[int]] = ""  # texts, or token ids
    max_tokens: int | None = Field(default=16, ge=0)  # OpenAI's default for completions
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: Text | None = None
    best_of: int | None = Field(default=None, ge=1)

    def prompts(self) -> list[str | list[int]]:
        if self.suffix:
            raise SettingError(
                "{name}: not supported (the models continue text, they do not fill in)",
                "suffix",
            )
        if self.best_of not in (None, 1, self.n) or (self.best_of or 1) > 1:
            raise SettingError(
                "{name}: not supported; ask for n choices and compare their logprobs",
                "best_of",
            )
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]  # one text, or one list of token ids
        return list(self.prompt)


class Part(BaseModel):
    """A part of a message's content: text, the only kind these models read (an image or
    a sound is refused, not dropped unseen)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: Text


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[Part] | None = ""

    def text(self) -> str:
        if isinstance(self.content, list):  # parts: the text ones, in order
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)

    def candidates(self) -> int:
        return (self.top_logprobs or 0) if self.logprobs else 0


# -- the chat transcript -------------------------------------------------------------------

ROLES = {
    "system": "System",
    "developer": "System",
    "user": "User",
    "assistant": "Assistant",
    "tool": "Tool",
}
TURN_END = "\nUser:"  # the model is stopped before it writes the user's next turn


def chat_prompt(messages: list[Message]) -> str:
    """The conversation as a transcript the model continues, one turn a paragraph:

    System: You are terse.

    User: What is a list?

    Assistant:
    """
    turns = [f"{ROLES[m.role]}: {m.text().strip()}" for m in messages]
    return "\n\n".join(turns) + "\n\nAssistant:"


# -- responses -----------------------------------------------------------------------------


def error_body(
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def finish_reason(sample: Sample) -> str:
    """OpenAI's words: the end-of-text token and a stop string are both "stop"."""
    return "length" if sample.finish_reason == "length" else "stop"


def completion_logprobs(records: list[TokenRecord], token_text, offset: int) -> dict[str, Any]:  # noqa: ANN001
    """The completions API's logprobs: per token its text, log-probability, the top
    alternatives and where its text starts."""
    tokens, logprobs, tops, offsets = [], [], [], []
    for record in records:
        if record.token_id is None:
            continue
        tokens.append(token_text(record.token_id))
        logprobs.append(record.logprob)
        tops.append({token_text(c.token_id): c.logprob for c in record.candidates} or None)
        offsets.append(offset)
        offset += len(record.text)
    return {
        "tokens": tokens,
        "token_logprobs": logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def joined_logprobs(first: dict | None, then: dict | None) -> dict | None:
    """Two stretches of the completions API's logprobs, one after the other (an echoed
    prompt's, then the completion's)."""
    if first is None or then is None:
        return then if first is None else first
    return {key: first[key] + then[key] for key in first}


def chat_logprobs(records: list[TokenRecord], token_bytes: list[bytes], token_text) -> dict:  # noqa: ANN001
    """The chat API's logprobs: `content`, per token its text, bytes and top alternatives."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        return {
            "token": token_text(token_id),
            "logprob": logprob,
            "bytes": list(token_bytes[token_id]),
        }

    return {
        "content": [
            {
                **entry(r.token_id, r.logprob),
                "top_logprobs": [entry(c.token_id, c.logprob) for c in r.candidates],
            }
            for r in records
            if r.token_id is not None
        ]
    }


def usage(prompt_tokens: int, completion_tokens: int, dropped: int) -> dict[str, int]:
    """Token counts, and (textgen's) how many prompt tokens the context window left out."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_dropped": dropped,
    }


def now() -> int:
    return int(time.time())
