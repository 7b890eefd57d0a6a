"""What one request cannot do to the server: stall it, exhaust it, crash it or read its
disk. The app runs in this process (FastAPI's test client), over real models."""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textgen.errors import TextgenError
from textgen.serve.app import create_app
from textgen.serve.gate import LOOPBACK
from textgen.serve.protocol import Limits
from textgen.serve.registry import Registry
from textgen.store import folder as model_folder
from textgen.store.metrics import read_metrics

KEY = "sesame"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def models(tmp_path_factory, trained_folder) -> Path:
    home = tmp_path_factory.mktemp("limits")
    shutil.copytree(trained_folder, home / "tiny")
    return home


def make_client(home: Path, monkeypatch, api_key: str | None = None, **limits) -> TestClient:
    monkeypatch.setenv("TEXTGEN_HOME", str(home))
    registry = Registry(None, slots=4, queue=16, threads=1)
    app = create_app(registry, api_key, Limits(**limits), lambda line: None, LOOPBACK)
    return TestClient(app, base_url="http://localhost:8000")


@pytest.fixture
def client(models, monkeypatch):
    with make_client(models, monkeypatch) as client:
        yield client


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]


# -- no body is a 500 ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
FIELDS = [
    "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "min_p", "repetition_penalty", "n", "stream", "stream_options", "stop",
    "seed", "logprobs", "top_logprobs", "echo", "suffix", "presence_penalty",
]  # fmt: skip
small = st.integers(min_value=-2, max_value=4)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "bot", 5])},
    optional={
        "content": json_values
        | st.lists(st.fixed_dictionaries({"type": st.just("text")}, optional={"text": json_values}))
    },
)
bodies = st.fixed_dictionaries(
    {"model": st.just("tiny") | json_values},
    optional={
        **{field: json_values for field in FIELDS if field != "model"},
        "max_tokens": small | json_values,  # a few tokens: the model really runs
        "n": small,
        "messages": st.lists(message, max_size=3) | json_values,
        "prompt": st.text(string.printable + "\ud800\udfff\u00e9", max_size=30) | json_values,
        "logprobs": small | json_values,
    },
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, route=st.sampled_from(["/v1/completions", "/v1/chat/completions"]))
def test_no_request_body_is_answered_with_a_500(client, body, route):
    response = client.post(route, content=json.dumps(body), headers=JSON)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert error_of(response)["message"]


@pytest.mark.parametrize(
    ("route", "body", "where"),
    [
        ("/v1/completions", '{"model": "tiny", "prompt": "\\ud800abc"}', "prompt"),
        ("/v1/completions", '{"model": "tiny", "prompt": "x", "stop": ["\\udfff"]}', "stop.0"),
        (
            "/v1/chat/completions",
            '{"model": "tiny", "messages": [{"role": "user", "content": '
            '[{"type": "text", "text": 5}]}]}',
            "messages.0.content.0.text",
        ),
        (
            "/v1/chat/completions",
            '{"model": "tiny", "messages": [{"role": "user", "content": '
            '[{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {}}]}]}',
            "messages.0.content.1.type",
        ),
        (
            "/v1/chat/completions",
            '{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text"}]}]}',
            "messages.0.content.0.text",
        ),
    ],
)
def test_a_lone_surrogate_or_a_part_of_the_wrong_type_is_a_400_naming_the_field(
    client, route, body, where
):
    response = client.post(route, content=body, headers=JSON)
    assert response.status_code == 400
    assert error_of(response)["param"] == where


# -- stop strings, bodies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "words"),
    [(["a"] * 5, "up to 4"), ("x" * 1001, "up to 4 non-empty strings of up to 1,000 characters")],
)
def test_stop_strings_are_bounded_in_number_and_length(client, stop, words):
    response = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "stop": stop})
    assert response.status_code == 400
    assert words in error_of(response)["message"] and error_of(response)["param"] == "stop"


def test_a_long_stop_string_is_matched_as_the_text_streams(client):
    stop = "the " * 200  # 800 characters, overlapping itself at every word
    response = client.post(
        "/v1/completions",
        json={"model": "tiny", "prompt": "The cat", "stop": [stop], "max_tokens": 40, "seed": 1},
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["finish_reason"] == "length"


def test_a_body_over_the_limit_is_refused_before_it_is_read(models, monkeypatch):
    with make_client(models, monkeypatch, body_bytes=10_000) as client:
        big = json.dumps({"model": "tiny", "prompt": "x" * 20_000})
        announced = client.post("/v1/completions", content=big, headers=JSON)
        assert announced.status_code == 413 and "10,000 bytes" in error_of(announced)["message"]

        def chunks():  # no Content-Length: counted as it comes
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000].encode()

        streamed = client.post("/v1/completions", content=chunks(), headers=JSON)
        assert streamed.status_code == 413
        small = client.post(
            "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 1}
        )
        assert small.status_code == 200


# -- who may ask ---------------------------------------------------------------------------


def test_with_a_key_every_route_needs_it_and_the_scheme_is_case_blind(models, monkeypatch):
    with make_client(models, monkeypatch, api_key=KEY) as client:
        for route in ("/health", "/openapi.json", "/v1/models"):
            assert client.get(route).status_code == 401, route
        for scheme in ("Bearer", "bearer", "BEARER"):
            answer = client.get("/v1/models", headers={"Authorization": f"{scheme} {KEY}"})
            assert answer.status_code == 200, scheme
        assert client.get("/health", headers={"Authorization": "Bearer nope"}).status_code == 401


@pytest.mark.parametrize(
    ("host", "status"),
    [("localhost:8000", 200), ("127.0.0.1:8000", 200), ("[::1]:8000", 200), ("LOCALHOST", 200),
     ("evil.example:8000", 400), ("127.0.0.1.evil.example", 400), ("localhost:80@evil", 400)],
)  # fmt: skip
def test_a_loopback_server_answers_loopback_host_names_only(client, host, status):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1."""
    assert client.get("/v1/models", headers={"Host": host}).status_code == status


# -- what the server offers ----------------------------------------------------------------


def test_staging_and_hidden_folders_are_not_offered(models, monkeypatch, client):
    staging = models / ".tiny.new-4242"
    shutil.copytree(models / "tiny", staging)
    try:
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert ids == ["tiny"]
        assert [s["name"] for s in model_folder.survey(models)[0]] == ["tiny"]
    finally:
        shutil.rmtree(staging)


def test_a_model_retrained_on_disk_is_served_anew_and_says_its_step(models, monkeypatch):
    home = models.parent / "retrained"
    shutil.copytree(models / "tiny", home / "m")
    body = {"model": "m", "prompt": "The cat", "max_tokens": 8, "temperature": 0}
    with make_client(home, monkeypatch) as client:
        before = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
        (entry,) = client.get("/v1/models").json()["data"]
        assert entry["served_step"] == entry["step"] == 200 and entry["created"] > 0

        lm = model_folder.load(home / "m")  # a new checkpoint: other weights, a later step
        for parameter in lm.model.parameters():
            parameter.data.mul_(-1.0)
        config = json.loads((home / "m" / "config.json").read_text())
        config["training"]["steps"] = 300
        model_folder.save_weights(home / "m", lm.model)
        (home / "m" / "config.json").write_text(json.dumps(config))

        after = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
        assert after != before
        (entry,) = client.get("/v1/models").json()["data"]
        assert entry["served_step"] == entry["step"] == 300


def test_errors_never_show_the_server_s_paths(models, monkeypatch):
    home = models.parent / "broken"
    shutil.copytree(models / "tiny", home / "bad")
    (home / "bad" / "tokenizer.json").write_text("{}")
    with make_client(home, monkeypatch) as client:
        response = client.post("/v1/completions", json={"model": "bad", "prompt": "x"})
    assert response.status_code == 503
    message = error_of(response)["message"]
    assert "bad/tokenizer.json" in message and str(home) not in message, message


def test_nested_json_in_a_model_folder_spoils_only_that_model(models, monkeypatch):
    home = models.parent / "nested"
    shutil.copytree(models / "tiny", home / "good")
    shutil.copytree(models / "tiny", home / "deep")
    (home / "deep" / "config.json").write_text("[" * 100_000)
    summaries, problems = model_folder.survey(home)
    assert [s["name"] for s in summaries] == ["good"]
    assert len(problems) == 1 and "deep/config.json" in problems[0] and "nested" in problems[0]

    weights = home / "good" / "model.safetensors"  # a weights header nested as deep
    header = b"[" * 100_000
    weights.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(TextgenError, match="model.safetensors: unreadable .*nested"):
        model_folder.count_parameters(home / "good")
    metrics = home / "good" / "metrics.jsonl"  # and a metrics line: skipped, as a torn one
    kept = metrics.read_text()
    metrics.write_text(kept + "[" * 100_000 + "\n")
    assert read_metrics(home / "good") == read_metrics(models / "tiny")
