"""`textgen write`: writing with the model a token at a time, in a full-screen view.

The draft (the library under the view) with the real tiny model; the view through
Textual's headless driver, key by key; and the command once in a real pseudo-terminal,
at 80x24 and at 40 columns, left with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import math
import signal
import sys

import pytest
from helpers import keys_in_a_terminal, one_line_error, run, run_cli

from textgen.decode.writing import Draft
from textgen.settings import MAX_TEMPERATURE, SampleConfig

pytest.importorskip("textual")

PROMPT = "The cat"


def draft(lm, seed=1, temperature=0.8, top=9) -> Draft:
    return Draft(lm, PROMPT, SampleConfig(temperature=temperature, seed=seed), top)


def test_candidates_are_the_models_most_likely_tokens_at_the_temperature(lm):
    d = draft(lm, temperature=0.5)
    candidates = d.next.candidates
    assert len(candidates) == 9
    logprobs = [c.logprob for c in candidates]
    assert logprobs == sorted(logprobs, reverse=True)
    # temperature 0.5 sharpens: the top candidate is more likely than under the model
    assert candidates[0].prob > math.exp(candidates[0].logprob)
    greedy = draft(lm, temperature=0.0)
    assert greedy.next.candidates[0].prob == pytest.approx(1.0)
    assert greedy.next.sampled == greedy.next.candidates[0].token_id


def test_adding_a_token_extends_the_text_and_undo_restores_the_step(lm):
    d = draft(lm)
    before = d.next.candidates
    token = before[2].token_id
    d.add(token)
    assert d.added == [token]
    assert d.text == PROMPT + lm.tokenizer.token_text(token)
    assert d.pieces()[0][1] == pytest.approx(math.exp(before[2].logprob), rel=1e-4)
    assert d.undo() is True
    assert d.text == PROMPT
    assert [c.token_id for c in d.next.candidates] == [c.token_id for c in before]
    assert [c.logprob for c in d.next.candidates] == pytest.approx([c.logprob for c in before])
    assert d.undo() is False  # the prompt stays


def test_the_same_seed_and_keys_give_the_same_text(lm):
    texts = []
    for _ in range(2):
        d = draft(lm, seed=7)
        for _ in range(30):
            d.add_sampled()
        d.add(d.next.candidates[1].token_id)
        d.undo()
        for _ in range(5):
            d.add_sampled()
        texts.append(d.text)
    assert texts[0] == texts[1]
    assert len(texts[0]) > len(PROMPT)


def test_a_draft_longer_than_the_context_window_keeps_going(lm):
    d = draft(lm, seed=3)
    window = lm.model.config.context_window
    for _ in range(window * 3):
        d.add_sampled()
    assert len(d.added) == window * 3
    d.undo()  # rebuilt from the last window of tokens
    assert len(d.added) == window * 3 - 1
    d.add_sampled()


def test_the_temperature_stays_within_the_cap(lm):
    d = draft(lm)
    d.set_temperature(5.0)
    assert d.temperature == MAX_TEMPERATURE
    d.set_temperature(-1.0)
    assert d.temperature == 0.0


# -- the view, through Textual's headless driver ----------------------------------------


def _app(lm, tmp_path, d, stretch=12):
    from textgen.ui.write import WriteApp

    return WriteApp(d, lm.tokenizer.render, tmp_path / "story.txt", stretch, "test")


def _drive(app, keys, size=(80, 24)):
    """Press the keys one by one (waiting for a stretch to end); the app's result."""

    async def go():
        async with app.run_test(size=size) as pilot:
            for key in keys:
                await pilot.press(key)
                await pilot.pause()
                if key == "enter":
                    await app.workers.wait_for_complete()
                    await pilot.pause()
            return pilot

    asyncio.run(go())
    return app.return_value


def test_number_keys_tab_and_backspace_write_and_undo(lm, tmp_path):
    d = draft(lm)
    second, sampled_after = d.next.candidates[1].token_id, None
    app = _app(lm, tmp_path, d)
    _drive(app, ["2"])
    assert d.added == [second]
    sampled_after = d.next.sampled
    _drive(_app(lm, tmp_path, d), ["tab"])
    assert d.added == [second, sampled_after]
    _drive(_app(lm, tmp_path, d), ["backspace", "backspace", "backspace"])
    assert d.added == []


def test_plus_and_minus_change_the_temperature_within_the_cap(lm, tmp_path):
    d = draft(lm, temperature=1.8)
    _drive(_app(lm, tmp_path, d), ["plus"] * 5)
    assert d.temperature == MAX_TEMPERATURE
    _drive(_app(lm, tmp_path, d), ["minus"] * 3)
    assert d.temperature == pytest.approx(1.7)


def test_enter_writes_a_stretch_and_s_saves_the_text(lm, tmp_path):
    d = draft(lm, seed=5)
    app = _app(lm, tmp_path, d, stretch=12)
    _drive(app, ["enter", "s"])
    assert 1 <= len(d.added) <= 12  # ends early only at the end of a text
    assert len(d.added) == 12 or d.ended
    assert (tmp_path / "story.txt").read_text(encoding="utf-8") == d.text
    assert app.saved == tmp_path / "story.txt"


def test_s_never_replaces_a_file_that_appeared_meanwhile(lm, tmp_path):
    d = draft(lm)
    app = _app(lm, tmp_path, d)
    (tmp_path / "story.txt").write_text("someone else's", encoding="utf-8")
    _drive(app, ["tab", "s"])
    assert (tmp_path / "story.txt").read_text(encoding="utf-8") == "someone else's"
    assert app.saved is None


def test_a_save_that_fails_leaves_the_session_going(lm, tmp_path):
    from textgen.ui.write import WriteApp

    d = draft(lm)
    (tmp_path / "a-file").write_text("", encoding="utf-8")  # no folder can be made there
    app = WriteApp(d, lm.tokenizer.render, tmp_path / "a-file" / "x.txt", 12, "test")
    assert _drive(app, ["tab", "s", "tab", "ctrl+c"]) == d.text
    assert len(d.added) == 2 and app.saved is None


def test_the_default_file_name_is_one_no_file_has(tmp_path, monkeypatch):
    from textgen.ui.write import new_save_path

    monkeypatch.chdir(tmp_path)
    first = new_save_path()
    first.write_text("mine", encoding="utf-8")
    assert new_save_path() != first


def test_escape_stops_a_stretch(lm, tmp_path):
    d = draft(lm, seed=5)
    app = _app(lm, tmp_path, d, stretch=100_000)

    async def go():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("enter")
            while len(d.added) < 5:
                await asyncio.sleep(0.01)
            await pilot.press("escape")
            await app.workers.wait_for_complete()
            await pilot.pause()
            return len(d.added)

    stopped_at = asyncio.run(go())
    assert 5 <= stopped_at < 100_000
    assert not app.writing.is_set()


def test_ctrl_c_leaves_with_the_text(lm, tmp_path):
    d = draft(lm)
    app = _app(lm, tmp_path, d)
    assert _drive(app, ["1", "tab", "ctrl+c"]) == d.text
    assert len(d.added) == 2


# -- the command ------------------------------------------------------------------------


def test_write_needs_a_terminal(trained_folder):
    result = run("write", "--model", str(trained_folder), stdin="")
    one_line_error(result.returncode, result.stderr, 1, "reads keys from a terminal")


@pytest.mark.parametrize(
    "option, message",
    [(["--candidates", "12"], "--candidates must be 1 to 9"), (["-t", "3"], "temperature")],
)
def test_bad_options_are_one_line(capsys, monkeypatch, trained_folder, option, message):
    code, _, err = run_cli(capsys, monkeypatch, "write", "--model", str(trained_folder), *option)
    one_line_error(code, err, 2, message)


def test_save_never_replaces_a_file_unasked(capsys, monkeypatch, trained_folder, tmp_path):
    existing = tmp_path / "mine.txt"
    existing.write_text("my own words", encoding="utf-8")
    code, _, err = run_cli(
        capsys, monkeypatch, "write", "--model", str(trained_folder), "--save", str(existing)
    )
    one_line_error(code, err, 2, "exists")
    assert existing.read_text(encoding="utf-8") == "my own words"


@pytest.mark.parametrize("columns", [80, 40])
def test_in_a_real_terminal_keys_write_and_ctrl_c_leaves_the_text_on_stdout(
    trained_folder, lm, columns
):
    code, out, screen = keys_in_a_terminal(
        [sys.executable, "-m", "textgen", "write", "The cat"]
        + ["--model", str(trained_folder), "--seed", "11"],
        [b"1", b"\t", b"\t", b"\x03"],
        columns,
    )
    assert code == 0, screen
    expected = draft(lm, seed=11)
    expected.add(expected.next.candidates[0].token_id)
    expected.add_sampled()
    expected.add_sampled()
    assert out == expected.text + "\n"
    lines = screen.splitlines()
    assert all(len(line) <= columns for line in lines)
    for key in range(1, 10):  # every candidate fits the screen, with its key
        assert any(line.lstrip(" │").startswith(f"{key} ") for line in lines), screen
    assert "temperature 0.8" in screen


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_termination_signal_keeps_the_text_on_stdout(trained_folder, lm, name, code):
    number = getattr(signal, name)
    exit_code, out, _ = keys_in_a_terminal(
        [sys.executable, "-m", "textgen", "write", "The cat"]
        + ["--model", str(trained_folder), "--seed", "11"],
        [b"1", b"\t", ("signal", number)],
    )
    assert exit_code == code
    expected = draft(lm, seed=11)
    expected.add(expected.next.candidates[0].token_id)
    expected.add_sampled()
    assert out == expected.text + "\n"


def test_a_terminal_that_goes_away_ends_it_with_the_text_kept(trained_folder):
    import fcntl
    import os
    import pty
    import select
    import struct
    import subprocess
    import termios
    import time

    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "textgen", "write", "The cat", "--model", str(trained_folder)],
        stdin=child_fd,
        stdout=subprocess.PIPE,
        stderr=child_fd,
        env={**os.environ, "TERM": "xterm-256color"},
        start_new_session=True,  # no controlling terminal: no hang-up signal comes
    )
    os.close(child_fd)
    seen, deadline = b"", time.monotonic() + 120
    while b"Tab" not in seen and time.monotonic() < deadline:
        if select.select([main_fd], [], [], 0.2)[0]:
            seen += os.read(main_fd, 65536)
    os.close(main_fd)  # the terminal window closes
    try:
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert out == b"The cat\n"
