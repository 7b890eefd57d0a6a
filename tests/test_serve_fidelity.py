"""The OpenAI API as its clients use it: every parameter is done or refused by name, never
silently ignored. The official `openai` client talks to the app in this process."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, NotFoundError, OpenAI

from textgen.serve.app import create_app
from textgen.serve.gate import LOOPBACK
from textgen.serve.protocol import Limits
from textgen.serve.registry import Registry
from textgen.training.evaluate import score_text

TEXT = "The cat sees the ball in the garden."


@pytest.fixture(scope="module")
def home(tmp_path_factory, trained_folder) -> Path:
    home = tmp_path_factory.mktemp("fidelity")
    shutil.copytree(trained_folder, home / "tiny")
    return home


@pytest.fixture
def http(home, monkeypatch):
    monkeypatch.setenv("TEXTGEN_HOME", str(home))
    app = create_app(Registry(None, 4, 16, threads=1), None, Limits(), lambda line: None, LOOPBACK)
    with TestClient(app, base_url="http://localhost:8000") as client:
        yield client


@pytest.fixture
def client(http) -> OpenAI:
    return OpenAI(base_url="http://localhost:8000/v1", api_key="unused", http_client=http)


def test_logit_bias_bans_and_forces_tokens(client, lm):
    plain = client.completions.create(model="tiny", prompt="The cat", max_tokens=6, temperature=0)
    first = lm.tokenizer.encode(plain.choices[0].text)[0]
    banned = client.completions.create(
        model="tiny", prompt="The cat", max_tokens=6, temperature=0, logit_bias={str(first): -100}
    )
    assert lm.tokenizer.encode(banned.choices[0].text)[0] != first
    forced_id = lm.tokenizer.encode(" moon")[0]
    forced = client.completions.create(
        model="tiny", prompt="The cat", max_tokens=4, temperature=0, logit_bias={forced_id: 100}
    )
    assert set(lm.tokenizer.encode(forced.choices[0].text)) == {forced_id}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logit_bias": {"99999": 5}}, "logit_bias"),
        ({"logit_bias": {"x": 5}}, "logit_bias"),
        ({"logit_bias": {"5": 500}}, "logit_bias"),
        ({"best_of": 3}, "best_of"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_what_is_not_done_is_refused_by_name(client, extra, param):
    with pytest.raises(BadRequestError) as error:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2, **extra
        ) if param != "best_of" else client.completions.create(
            model="tiny", prompt="x", max_tokens=2, **extra
        )
    assert error.value.body["param"] == param


def test_a_model_is_retrieved_by_name_and_an_unknown_one_is_a_404(client):
    assert client.models.retrieve("tiny").id == "tiny"
    assert client.models.retrieve("tiny").created > 0
    with pytest.raises(NotFoundError):
        client.models.retrieve("nope")


def test_unknown_routes_and_methods_answer_in_openai_s_shape(http):
    for response, status in (
        (http.get("/v1/nowhere"), 404),
        (http.delete("/v1/completions"), 405),
        (http.get("/v1/completions"), 405),
    ):
        assert response.status_code == status
        assert set(response.json()) == {"error"} and response.json()["error"]["message"]
    assert "POST" in http.get("/v1/completions").headers["allow"]


def test_a_prompt_of_token_ids_reads_as_its_text(client, lm):
    ids = lm.tokenizer.encode_document("The cat")  # the end-of-text marker first
    by_text = client.completions.create(model="tiny", prompt="The cat", max_tokens=6, temperature=0)
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=6, temperature=0)
    several = client.completions.create(
        model="tiny", prompt=[ids, ids], max_tokens=6, temperature=0
    )
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert [c.text for c in several.choices] == [by_text.choices[0].text] * 2
    with pytest.raises(BadRequestError, match="token ids of this model run from 0 to"):
        client.completions.create(model="tiny", prompt=[1, 10**6], max_tokens=1)


def test_echo_with_logprobs_scores_the_prompt_as_textgen_score_does(client, lm):
    answer = client.completions.create(
        model="tiny", prompt=TEXT, max_tokens=0, echo=True, logprobs=2, temperature=0
    )
    choice = answer.choices[0]
    assert choice.text == TEXT
    scored = score_text(lm, TEXT)
    logprobs = choice.logprobs
    assert logprobs.token_logprobs[0] is None  # the end-of-text marker: nothing precedes it
    assert len(logprobs.tokens) == len(scored.token_ids) + 1
    for logprob, nll in zip(logprobs.token_logprobs[1:], scored.nlls, strict=True):
        assert logprob == pytest.approx(-nll, abs=1e-4)
    for top in logprobs.top_logprobs[1:]:
        assert len(top) == 2 and all(math.isfinite(v) for v in top.values())
    texts = [TEXT[o:] for o in logprobs.text_offset[1:]]
    assert all(rest.startswith(t) for rest, t in zip(texts, logprobs.tokens[1:], strict=True))


def test_echo_with_a_completion_joins_the_prompt_s_logprobs_and_the_new_ones(client, lm):
    ids = lm.tokenizer.encode_document(TEXT)
    answer = client.completions.create(
        model="tiny", prompt=ids, max_tokens=1, echo=True, logprobs=1, temperature=0
    )  # what lm-evaluation-harness's local-completions sends to score a text
    logprobs = answer.choices[0].logprobs
    assert len(logprobs.token_logprobs) == len(ids) + 1
    greedy = logprobs.token_logprobs[-1]
    assert greedy == pytest.approx(max(logprobs.top_logprobs[-1].values()), abs=1e-5)


def test_a_streamed_echo_carries_the_prompt_s_logprobs_first(http):
    with http.stream(
        "POST",
        "/v1/completions",
        json={
            "model": "tiny",
            "prompt": TEXT,
            "max_tokens": 2,
            "echo": True,
            "logprobs": 0,
            "stream": True,
        },  # fmt: skip
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    first = httpx.Response(200, content=lines[0][6:]).json()["choices"][0]
    assert first["text"] == TEXT and first["logprobs"]["token_logprobs"][0] is None


def test_echo_scores_every_token_a_window_can_predict(client, lm):
    """A prompt one token longer than the window is scored whole: the model reads all but
    its last token, and predicts each after the first."""
    window = lm.model_config.context_window
    ids = lm.tokenizer.encode_document(TEXT * 10)[: window + 1]
    answer = client.completions.create(
        model="tiny", prompt=ids, max_tokens=0, echo=True, logprobs=0
    )
    logprobs = answer.choices[0].logprobs.token_logprobs
    assert len(logprobs) == window + 1 and logprobs[0] is None and None not in logprobs[1:]
