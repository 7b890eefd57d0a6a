"""Several temperatures side by side: `generate --temperature 0.2,0.8,1.5` writes one
sample per temperature from the same prompt and seed, so what differs between them is
the temperature alone."""

from __future__ import annotations

import json

import pytest
from helpers import ANSI, one_line_error, run_cli, run_in_terminal

TEMPERATURES = ("0.2", "0.8", "1.5")
BASE = ("generate", "The cat", "-n", "12", "--seed", "3")


@pytest.fixture
def textgen(capsys, monkeypatch):
    return lambda *args, stdin=None: run_cli(capsys, monkeypatch, *args, stdin=stdin)


def test_each_temperature_writes_the_sample_its_own_run_would_separated_by_a_blank_line(
    trained_folder, textgen
):
    model = ("--model", str(trained_folder))
    code, out, err = textgen(*BASE, *model, "-t", ",".join(TEMPERATURES))
    assert code == 0, err
    alone = []
    for t in TEMPERATURES:  # the same seed, one temperature at a time
        code, text, err = textgen(*BASE, *model, "-t", t)
        assert code == 0, err
        alone.append(text)
    assert out == "\n\n".join(alone)
    assert len(set(alone)) > 1  # the temperatures did change the text
    assert not ANSI.search(out)


def test_json_gives_one_object_per_temperature_with_the_same_seed(trained_folder, textgen):
    code, out, err = textgen(
        *BASE, "--model", str(trained_folder), "-t", "0,1,2", "--json", "--show-top", "3"
    )
    assert code == 0, err
    objects = [json.loads(line) for line in out.splitlines()]
    assert [o["settings"]["temperature"] for o in objects] == [0, 1, 2]
    assert {o["settings"]["seed"] for o in objects} == {3}
    assert all(len(o["tokens"]) == 12 for o in objects)
    # the first step's candidates are the model's, whatever the temperature; only the
    # distribution sampled from changes: sharper at 0, flatter at 2
    firsts = [o["tokens"][0]["top"] for o in objects]
    assert len({tuple(c["id"] for c in top) for top in firsts}) == 1
    top_probs = [top[0]["prob"] for top in firsts]
    assert top_probs[0] == 1.0 and top_probs[0] >= top_probs[1] >= top_probs[2]


def test_without_a_seed_the_samples_still_share_one(trained_folder, textgen):
    code, out, err = textgen(
        "generate", "The", "--model", str(trained_folder), "-t", "1,1", "-n", "8", "--json"
    )
    assert code == 0, err
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["settings"]["seed"] == second["settings"]["seed"] is not None
    assert first["text"] == second["text"]  # same temperature, same seed: the same text


@pytest.mark.parametrize(
    "value, message",
    [
        ("0.2,2.5", "2 is the cap"),
        ("0.2,warm", "'warm' is not a number"),
        ("0.2,,1", "'' is not a number"),
        ("0.5,nan", "2 is the cap"),
    ],
)
def test_every_temperature_in_a_list_is_checked(trained_folder, textgen, value, message):
    code, out, err = textgen(*BASE, "--model", str(trained_folder), "-t", value)
    one_line_error(code, err, 2, message)
    assert out == ""


def test_several_temperatures_with_several_samples_is_refused_saying_why(trained_folder, textgen):
    code, out, err = textgen(
        *BASE, "--model", str(trained_folder), "-t", "0.2,1", "--num-samples", "2"
    )
    one_line_error(code, err, 2, "one sample each")


@pytest.mark.parametrize("columns", [200, 40])
def test_a_terminal_heads_each_sample_with_its_temperature_side_by_side_when_wide(
    trained_folder, columns
):
    run = run_in_terminal(
        [*BASE, "--model", str(trained_folder), "-t", ",".join(TEMPERATURES), "--show-top", "3"],
        columns=columns,
    )
    assert run.code == 0, run.screen
    lines = run.screen.splitlines()
    headed = [i for i, line in enumerate(lines) if "T=0.2" in line and "T=1.5" in line]
    if columns == 200:  # one row of headers over the three columns of text
        assert headed and "T=0.8" in lines[headed[0]]
    else:  # one sample under another, each under a rule naming its temperature
        rules = [i for i, line in enumerate(lines) if "─ T=" in line]
        assert len(rules) == 3 and rules == sorted(rules)
    # the first step's distribution at each temperature, one column each
    assert "step 1: the same next-token distribution at each temperature" in " ".join(lines)
    assert any("T=0.2" in line and "T=0.8" in line and "T=1.5" in line for line in lines[-12:])


def test_many_temperatures_split_the_first_step_table_into_readable_parts(trained_folder):
    many = ",".join(f"{t / 10:g}" for t in range(20))
    run = run_in_terminal(
        [*BASE, "--model", str(trained_folder), "-t", many, "--show-top", "2"], columns=80
    )
    assert run.code == 0, run.screen
    headers = [line for line in run.screen.splitlines() if line.lstrip().startswith("token")]
    assert len(headers) > 1  # several tables, each a few temperatures wide
    assert "T=1.9" in run.screen and "…" not in "".join(headers)
