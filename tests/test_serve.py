"""textgen serve, as its clients see it: the official openai client, simonw's llm and raw
HTTP, against a real server process on a loopback port."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from helpers import one_line_error, run
from openai import APIError, APIStatusError, OpenAI

from textgen.decode.completion import Completion
from textgen.settings import SampleConfig

PROMPT = "The cat sees"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(home: Path, *options: str):
    """`textgen serve` in a process of its own; yields (base URL, process)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "textgen", "serve", "--port", str(port), *options],
        env={**os.environ, "TEXTGEN_HOME": str(home)},
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code in (200, 401):
                break  # up (401: with a key, /health asks for it too)
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        raise AssertionError(process.communicate()[1])
    try:
        yield base, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def home(tmp_path_factory, trained_folder) -> Path:
    models = tmp_path_factory.mktemp("served")
    shutil.copytree(trained_folder, models / "tiny")
    return models


@pytest.fixture(scope="module")
def running(home):
    with server(home, "--slots", "8") as (base, process):
        yield base, process


@pytest.fixture
def client(running) -> OpenAI:
    return OpenAI(base_url=f"{running[0]}/v1", api_key="unused", max_retries=0)


def textgen_generate(lm, prompt: str, **settings) -> str:
    completion = Completion(lm, prompt, SampleConfig(**settings))
    list(completion)
    return completion.samples[0].text


def test_models_and_health(client, running):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert httpx.get(f"{running[0]}/health").json()["status"] == "ok"


def test_a_seeded_completion_is_the_text_textgen_generate_writes(client, lm):
    options = dict(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0.9, seed=11)
    first = client.completions.create(**options)
    again = client.completions.create(**options)
    assert first.choices[0].text == again.choices[0].text
    expected = textgen_generate(lm, PROMPT, temperature=0.9, seed=11, max_new_tokens=40)
    assert first.choices[0].text == expected
    assert first.usage.completion_tokens == 40
    assert first.usage.prompt_tokens == len(lm.tokenizer.encode(PROMPT))


def test_streaming_sends_the_same_text_in_whole_characters(client):
    prompt = "emoji 😀 and 中文: "
    options = dict(model="tiny", prompt=prompt, max_tokens=60, temperature=1.5, seed=2)
    whole = client.completions.create(**options).choices[0].text
    pieces = [
        c.choices[0].text for c in client.completions.create(**options, stream=True) if c.choices
    ]
    assert "".join(pieces) == whole
    assert "\ufffd" not in "".join(pieces) or "\ufffd" in whole


def test_logprobs_echo_stop_and_several_choices(client):
    answer = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=20, seed=4, logprobs=3, n=3, echo=True, stop=["."]
    )
    assert [c.index for c in answer.choices] == [0, 1, 2]
    for choice in answer.choices:
        assert choice.text.startswith(PROMPT)
        assert "." not in choice.text[len(PROMPT) :]
        logprobs = choice.logprobs  # the echoed prompt's tokens first, then the new ones
        assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs)
        assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
        assert all(lp <= 0 for lp in logprobs.token_logprobs[1:])
        assert all(len(top) <= 3 for top in logprobs.top_logprobs[1:])
        assert logprobs.text_offset[0] == 0
        assert len(PROMPT) in logprobs.text_offset  # where the completion's first token starts
    assert len({c.text for c in answer.choices}) > 1  # seeds 4, 5, 6


def test_chat_answers_as_the_assistant_of_a_transcript(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A cat?"}]
    options = dict(model="tiny", messages=messages, max_tokens=30, seed=3)
    answer = client.chat.completions.create(**options, logprobs=True, top_logprobs=2)
    content = answer.choices[0].message.content
    assert answer.choices[0].message.role == "assistant" and "\nUser:" not in content
    assert all(len(t.top_logprobs) == 2 for t in answer.choices[0].logprobs.content)
    streamed = client.chat.completions.create(**options, stream=True)
    # the same text streamed or whole, to the last character (trailing spaces included)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == content


def test_a_prompt_longer_than_the_window_is_cut_and_said_so(client, lm):
    answer = client.completions.create(
        model="tiny", prompt="The bird sees the moon. " * 40, max_tokens=2
    )
    window = lm.model_config.context_window
    assert (
        answer.usage.model_extra["prompt_tokens_dropped"] == answer.usage.prompt_tokens + 1 - window
    )


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"model": "tiny", "prompt": "x", "temperature": 2.5}, 400, "2 is the cap"),
        ({"model": "nope", "prompt": "x"}, 404, "no model named 'nope'"),
        ({"model": "tiny", "prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
        ({"model": "tiny", "prompt": "x", "n": 50}, 400, "n: at most 8"),
        ({"model": "tiny", "prompt": "x", "max_tokens": 10**6}, 400, "max_tokens: at most"),
        ({"model": "tiny", "prompt": "x", "frequency_penalty": 1}, 400, "repetition_penalty"),
        ({"prompt": "x"}, 400, "model"),
    ],
)
def test_bad_requests_get_openai_s_error_shape_never_a_500(running, body, status, words):
    response = httpx.post(f"{running[0]}/v1/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error["message"] and error["type"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("top_k", 0, "top_k must be at least 1"),
        ("top_p", 0, "top_p must be in (0, 1]"),
        ("min_p", 2, "min_p must be in [0, 1]"),
        ("repetition_penalty", 0, "repetition_penalty must be a positive number"),
        ("temperature", 3, "temperature must be between 0 and 2"),
        ("n", 50, "n: at most 8"),
        ("presence_penalty", 1, "presence_penalty: not supported"),
    ],
)
def test_a_bad_setting_is_named_as_the_request_field_it_came_in(running, field, value, message):
    response = httpx.post(
        f"{running[0]}/v1/completions", json={"model": "tiny", "prompt": "x", field: value}
    )
    error = response.json()["error"]
    assert response.status_code == 400
    assert error["param"] == field and error["message"].startswith(message)
    assert "--" not in error["message"]  # no command-line option names over HTTP


def test_a_body_that_is_not_json_is_a_400(running):
    response = httpx.post(
        f"{running[0]}/v1/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_the_api_key_is_required_when_set(home):
    with server(home, "--api-key", "sesame") as (base, _):
        refused = OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(APIStatusError) as error:
            refused.completions.create(model="tiny", prompt="x", max_tokens=1)
        assert error.value.status_code == 401
        allowed = OpenAI(base_url=f"{base}/v1", api_key="sesame", max_retries=0)
        assert allowed.completions.create(model="tiny", prompt="x", max_tokens=1).choices


def test_sigterm_stops_the_server_with_the_shell_s_status_for_it(home):
    with server(home) as (base, process):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 143  # as during start-up, and every command
        assert process.stderr.read().strip().endswith("stopped (SIGTERM)")


@pytest.mark.parametrize(
    ("sent", "status"), [(signal.SIGINT, 130), (signal.SIGHUP, 129), (signal.SIGTERM, 143)]
)
def test_a_signal_ends_a_stream_in_flight_with_an_error_the_client_raises(home, sent, status):
    with server(home) as (base, process):
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        stream = client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=2000, stream=True, seed=0
        )
        received = []
        with pytest.raises(APIError, match="the server is stopping"):
            for chunk in stream:
                received.append(chunk.choices[0].text)
                if len(received) == 5:
                    process.send_signal(sent)
        assert len(received) < 2000
        assert process.wait(timeout=30) == status
        log = process.stderr.read()
        assert log.strip().endswith(f"stopped ({signal.Signals(sent).name})")
        assert "Traceback" not in log and "CancelledError" not in log


def test_a_port_in_use_or_a_missing_model_is_a_one_line_error(home, running):
    port = running[0].rsplit(":", 1)[1]
    env = {"TEXTGEN_HOME": str(home)}
    done = run("serve", "--port", port, env=env)
    one_line_error(done.returncode, done.stderr, 1, f"cannot listen on 127.0.0.1:{port}")
    assert "choose another --port" in done.stderr
    done = run("serve", "--port", str(free_port()), "--model", "nope", env=env)
    one_line_error(done.returncode, done.stderr, 1, "nope: no such model folder")


def test_listening_beyond_loopback_warns_and_a_key_quiets_the_advice(home):
    with server(home, "--host", "0.0.0.0") as (_, process):
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        assert "warning: listening on 0.0.0.0: other machines can reach" in process.stderr.read()


def test_llm_uses_the_server_as_a_completion_model(running, tmp_path, lm):
    """simonw's llm, configured for an OpenAI-compatible completion model (docs/ecosystem.md)."""
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: textgen-tiny\n  model_name: tiny\n  api_base: {running[0]}/v1\n"
        "  completion: true\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm",
            "-m",
            "textgen-tiny",
            PROMPT,
            "-o",
            "max_tokens",
            "15",
            "-o",
            "temperature",
            "0",
            "--no-log",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LLM_USER_PATH": str(tmp_path), "OPENAI_API_KEY": "unused"},
    )
    assert done.returncode == 0, done.stderr
    expected = textgen_generate(lm, PROMPT, temperature=0, max_new_tokens=15)
    assert done.stdout.rstrip("\n") == expected.rstrip("\n")


def test_a_whole_answer_whose_client_leaves_frees_its_slot(home, lm):
    """A request answered whole (not streamed) writes nothing until the end, so no failed
    write says its client went away: the server checks, and stops decoding for it."""
    never_ends = {str(lm.tokenizer.eot_id): -100}
    # a million tokens: no decoding step is fast enough to answer that within the second
    # the client waits
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 10**6, "logit_bias": never_ends}
    with server(home, "--slots", "1", "--max-tokens", str(10**6)) as (base, process):
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{base}/v1/completions", json=body, timeout=1.0)
        small = {"model": "tiny", "prompt": PROMPT, "max_tokens": 5, "seed": 1}
        after = httpx.post(f"{base}/v1/completions", json=small, timeout=120)
        assert after.status_code == 200
    log = process.stderr.read()
    assert "(the client left)" in log.splitlines()[-3] + log.splitlines()[-2], log


# -- many at once ------------------------------------------------------------------------------


def stream_raw(base: str, seed: int, tokens: int, leave_after: int | None = None) -> str | None:
    """One streaming request read as raw Server-Sent Events; checks each chunk; returns the
    text (None if it left early)."""
    body = {
        "model": "tiny",
        "prompt": PROMPT,
        "max_tokens": tokens,
        "seed": seed,
        "stream": True,
        "temperature": 1.0,
    }
    text, events, done = "", 0, False
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            if line == "data: [DONE]":
                done = True
                continue
            chunk = json.loads(line[6:])
            text += chunk["choices"][0]["text"]
            events += 1
            if leave_after is not None and events >= leave_after:
                return None  # hangs up mid-stream
    assert done
    return text


def server_memory(process) -> int:
    return int(Path(f"/proc/{process.pid}/status").read_text().split("VmRSS:")[1].split()[0])


def test_thirty_two_streams_at_once_some_leaving_all_others_whole_and_identical(running):
    base, process = running
    seeds = list(range(32))
    staying = [seed for seed in seeds if seed % 8 != 7]
    alone = {seed: stream_raw(base, seed, 40) for seed in staying}  # one at a time
    before = server_memory(process)
    results: dict[int, str | None] = {}

    def client(seed: int) -> None:
        results[seed] = stream_raw(base, seed, 40, leave_after=3 if seed % 8 == 7 else None)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert len(results) == 32
    assert all(results[seed] is None for seed in seeds if seed % 8 == 7)
    assert all(results[seed] == alone[seed] for seed in staying)  # batched or alone: the same
    assert server_memory(process) < before + 200 * 1024  # KB: bounded, whatever came and went
    assert httpx.get(f"{base}/health").json()["status"] == "ok"
