"""Looking through the layers: the logit lens, embedding neighbours, what each head does,
and the pictures of them (`textgen lens`, `neighbors`, `heads`, `--save`)."""

from __future__ import annotations

import json
import struct
import sys
import xml.etree.ElementTree as ET

import pytest
import torch
import torch.nn.functional as F
from helpers import ANSI, one_line_error, run_cli

from textgen.errors import SettingError
from textgen.inside.embedding import neighbours, parse_query, term_ids
from textgen.inside.heads import LABELS, head_statistics, label_for
from textgen.inside.readout import logit_lens
from textgen.model.transformer import Transformer
from textgen.settings import ModelConfig
from textgen.ui.pictures import DPI, SIZE_INCHES

# -- the logit lens -------------------------------------------------------------------------


def test_the_lens_last_depth_is_the_models_own_prediction(lm):
    ids = lm.tokenizer.encode_document("The old fox chases the red hat")
    reading = logit_lens(lm.model, ids, last=len(ids), top=4)
    real = lm.model(torch.tensor([ids]))[0][0].log_softmax(-1)  # (T, vocab)
    assert reading.depths == ["embedding", "layer 0", "layer 1"]
    for position, candidates in enumerate(reading.top[-1]):
        best = real[position].topk(4)
        assert [c.token_id for c in candidates] == best.indices.tolist()
        assert [c.logprob for c in candidates] == pytest.approx(best.values.tolist(), abs=1e-5)
    # and the probability of each real next token, read at the last depth
    following = torch.tensor(ids[1:])
    expected = real[:-1].gather(-1, following[:, None])[:, 0].exp().tolist()
    assert reading.next_prob[-1][:-1] == pytest.approx(expected, abs=1e-5)
    assert reading.next_prob[-1][-1] is None


def test_the_lens_reads_a_one_layer_model_and_the_last_positions_of_a_text():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, context_window=16, n_layer=1, n_embd=32, n_head=2)
    model = Transformer(config).eval()
    ids = list(range(1, 13))
    reading = logit_lens(model, ids, last=5, top=3)
    assert reading.depths == ["embedding", "layer 0"]
    assert reading.first_position == 7 and reading.token_ids == ids[7:]
    assert [len(row) for row in reading.top] == [5, 5]
    real = model(torch.tensor([ids]))[0][0, 7:].softmax(-1)
    assert [row[0].prob for row in reading.top[-1]] == pytest.approx(
        real.max(-1).values.tolist(), abs=1e-6
    )
    # depth 0 is the embedding alone, through the final norm and the unembedding
    embedded = model.logits(model.embed(torch.tensor([ids[7:]])))[0].softmax(-1)
    assert [row[0].prob for row in reading.top[0]] == pytest.approx(
        embedded.max(-1).values.tolist(), abs=1e-6
    )


def test_lens_in_a_pipe_json_and_a_long_prompt(capsys, monkeypatch, trained_folder):
    code, out, err = run_cli(capsys, monkeypatch, "lens", "The cat sees", "-m", str(trained_folder))
    assert code == 0 and not ANSI.search(out)
    lines = out.splitlines()
    assert lines[0].split("\t")[0] == "depth" and len(lines) == 1 + 3
    code, out, _ = run_cli(
        capsys,
        monkeypatch,
        "lens",
        "The cat sees",
        "-m",
        str(trained_folder),
        "--json",
        "--top",
        "3",
    )
    data = json.loads(out)
    assert [d["name"] for d in data["depths"]] == ["embedding", "layer 0", "layer 1"]
    assert all(len(p["top"]) == 3 for d in data["depths"] for p in d["positions"])
    assert data["dropped_tokens"] == 0
    long_prompt = "The cat sees the ball. " * 20  # longer than the context window (32)
    code, out, err = run_cli(
        capsys, monkeypatch, "lens", long_prompt, "-m", str(trained_folder), "--last", "4"
    )
    assert code == 0
    assert "kept its last 32 tokens" in err and "showing the last 4 of 32 positions" in err
    assert len(out.splitlines()[0].split("\t")) == 1 + 4


# -- embedding neighbours -------------------------------------------------------------------


def test_a_token_is_its_own_nearest_neighbour_and_is_left_out(lm):
    word = "ball"
    ids = term_ids(lm.tokenizer, word)
    assert len(ids) == 1
    weights = F.normalize(lm.model.embed.weight.detach().float(), dim=-1)
    similarity = weights @ weights[ids[0]]
    assert int(similarity.argmax()) == ids[0]
    assert float(similarity[ids[0]]) == pytest.approx(1.0, abs=1e-5)
    found = neighbours(lm.model, lm.tokenizer, word, top=5)
    listed = [n.token_id for n in found.neighbours]
    assert ids[0] not in listed and len(listed) == 5
    expected = [i for i in similarity.argsort(descending=True).tolist() if i != ids[0]][:5]
    assert listed == expected
    sims = [n.similarity for n in found.neighbours]
    assert sims == sorted(sims, reverse=True) and sims[0] < 1.0


def test_a_word_is_read_as_inside_running_text():
    """' ball' (one token, as in running text) rather than 'ball' split in pieces."""
    from textgen.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.train(["the ball and the ball, a ball! " * 50], 300)
    assert term_ids(tokenizer, "ball") == tokenizer.encode(" ball")


def test_analogies_parse_and_bad_ones_are_refused(capsys, monkeypatch, trained_folder):
    assert parse_query("king - man + woman") == [(1, "king"), (-1, "man"), (1, "woman")]
    assert parse_query("well-known") == [(1, "well-known")]  # a hyphen is not an operator
    assert parse_query("old fox + dog") == [(1, "old fox"), (1, "dog")]
    for bad in ["- man", "king -", "king + + woman", "king - - man", "   "]:
        with pytest.raises(SettingError):
            parse_query(bad)
        code, _, err = run_cli(capsys, monkeypatch, "neighbors", bad, "-m", str(trained_folder))
        one_line_error(code, err, 2, "")


def test_neighbors_of_an_analogy_leave_its_words_out(capsys, monkeypatch, trained_folder, lm):
    code, out, err = run_cli(
        capsys, monkeypatch, "neighbors", "cat - dog + bird", "-m", str(trained_folder), "--json"
    )
    data = json.loads(out)
    assert [(t["sign"], t["text"]) for t in data["terms"]] == [(1, "cat"), (-1, "dog"), (1, "bird")]
    own = {tok["id"] for t in data["terms"] for tok in t["tokens"]}
    assert len(data["neighbours"]) == 10 and not own & {n["id"] for n in data["neighbours"]}
    code, out, err = run_cli(capsys, monkeypatch, "neighbors", "cat", "-m", str(trained_folder))
    assert code == 0 and not ANSI.search(out) and len(out.splitlines()) == 10
    assert "'cat' = " in err  # how the word was read


# -- what each head does --------------------------------------------------------------------


def _pattern(T: int, rule) -> torch.Tensor:  # noqa: ANN001 - rule(i) -> {key: weight}
    rows = torch.zeros(T, T)
    for i in range(T):
        weights = rule(i)
        for key, weight in weights.items() if isinstance(weights, dict) else weights:
            rows[i, key] += weight
    return rows


def test_heads_are_labelled_by_what_they_do_on_hand_built_patterns():
    T = 16
    ids = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8] * 2)  # a repeated sequence: A B ... A -> B

    def induction(i: int) -> dict[int, float]:
        earlier = [j + 1 for j in range(i - 1) if ids[j] == ids[i] and j + 1 < i - 1]
        return {earlier[0]: 1.0} if earlier else {0: 1.0}

    def same(i: int) -> dict[int, float]:
        earlier = [j for j in range(i) if ids[j] == ids[i]]
        return {earlier[0]: 1.0} if earlier else {0: 1.0}

    rules = {
        "previous-token": lambda i: {max(i - 1, 0): 1.0},
        "first-token": lambda i: {0: 1.0},
        "broad": lambda i: {j: 1 / (i + 1) for j in range(i + 1)},
        "induction": induction,
        "same-token": same,
        None: lambda i: [(i, 0.6), (max(i - 1, 0), 0.2), (0, 0.2)],  # itself mostly: no label
    }
    patterns = torch.stack([_pattern(T, rule) for rule in rules.values()])[None]  # (1, 6, T, T)
    assert torch.allclose(patterns.sum(-1), torch.ones(1, 6, T))
    stats = head_statistics([(patterns, ids)])
    assert [s.label for s in stats] == list(rules)
    broad = stats[2]
    assert broad.spread == pytest.approx(1.0, abs=1e-5)
    assert stats[0].previous == pytest.approx(1.0) and stats[1].first == pytest.approx(1.0)
    assert stats[3].induction == pytest.approx(1.0) and stats[4].same_token == pytest.approx(1.0)


def test_a_label_needs_its_threshold_and_the_strongest_wins():
    figures = dict.fromkeys(["previous", "first", "same_token", "induction", "spread"], 0.0)
    for label, (statistic, bound) in LABELS.items():
        assert label_for({**figures, statistic: bound * 0.99}) is None
        assert label_for({**figures, statistic: bound}) == label
    assert label_for({**figures, "previous": 0.6, "induction": 0.9}) == "induction"


def test_heads_over_a_corpus_in_a_pipe_and_as_json(
    capsys, monkeypatch, trained_folder, corpus_file
):
    folder = str(trained_folder)
    code, out, err = run_cli(capsys, monkeypatch, "heads", str(corpus_file), "-m", folder)
    assert code == 0 and not ANSI.search(out)
    rows = out.splitlines()
    assert rows[0].startswith("layer\thead") and len(rows) == 1 + 2 * 4  # 2 layers x 4 heads
    code, out, _ = run_cli(
        capsys,
        monkeypatch,
        "heads",
        "-",
        "-m",
        folder,
        "--json",
        "--tokens",
        "100",
        stdin="The cat sees the moon. " * 30,
    )
    data = json.loads(out)
    assert data["tokens"] == 100 and len(data["heads"]) == 8
    assert set(data["thresholds"]) == set(LABELS)
    for head in data["heads"]:
        assert 0 <= head["previous"] <= 1 and 0 <= head["spread"] <= 1 + 1e-6
        assert head["label"] in (*LABELS, None)


# -- pictures -------------------------------------------------------------------------------

WIDTH, HEIGHT = (round(side * DPI) for side in SIZE_INCHES)


def _png_size(path) -> tuple[int, int]:  # noqa: ANN001
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


PICTURES = [
    ("attention", "The cat sees the ball"),
    ("attention", "The cat sees the ball", "--head", "1"),
    ("lens", "The cat sees the ball"),
    ("neighbors", "cat"),
    ("info",),
]


@pytest.mark.parametrize("command", PICTURES, ids=lambda c: "-".join(c[:1] + c[2:]))
@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_each_picture_is_a_valid_file_of_the_stated_size(
    capsys, monkeypatch, trained_folder, tmp_path, command, suffix
):
    path = tmp_path / f"picture.{suffix}"
    args = [*command, "-m", str(trained_folder), "--save", str(path)]
    code, out, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0, err
    assert f"saved the picture to {path}" in err
    if suffix == "png":
        assert _png_size(path) == (WIDTH, HEIGHT)
    else:
        root = ET.parse(path).getroot()
        assert root.tag.endswith("svg")
        assert root.get("width") == f"{SIZE_INCHES[0] * 72:g}pt"
        assert root.get("height") == f"{SIZE_INCHES[1] * 72:g}pt"
        assert (
            len(root.findall(".//{http://www.w3.org/2000/svg}text"))
            + len(root.findall(".//{http://www.w3.org/2000/svg}use"))
            > 10
        )  # labels were drawn
    # an existing picture is not replaced unasked
    before = path.read_bytes()
    code, _, err = run_cli(capsys, monkeypatch, *args)
    one_line_error(code, err, 2, "pass --overwrite")
    assert path.read_bytes() == before
    code, _, err = run_cli(capsys, monkeypatch, *args, "--overwrite")
    assert code == 0, err


def test_a_picture_names_its_format_and_its_extra(capsys, monkeypatch, trained_folder, tmp_path):
    folder = str(trained_folder)
    code, _, err = run_cli(
        capsys, monkeypatch, "lens", "The cat", "-m", folder, "--save", str(tmp_path / "x.jpg")
    )
    one_line_error(code, err, 2, "name a .png or .svg file")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if not installed
    code, _, err = run_cli(
        capsys, monkeypatch, "info", "-m", folder, "--save", str(tmp_path / "x.png")
    )
    one_line_error(code, err, 1, "pip install 'textgen-cli[plot]'")
    assert not (tmp_path / "x.png").exists()
