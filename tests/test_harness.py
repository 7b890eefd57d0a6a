"""lm-evaluation-harness scores a model through `textgen serve`, as it scores any
OpenAI-compatible server (its `local-completions` model: token ids in, `echo` with
`logprobs` back), and finds the bits per byte that `textgen eval` finds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import make_corpus
from test_serve import server

from textgen.export import export
from textgen.store import folder as model_folder

TASK = """task: textgen_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
"""


def test_lm_evaluation_harness_scores_through_the_server_as_textgen_eval_does(
    tmp_path, trained_folder, capsys, monkeypatch
):
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness: make harness")
    from helpers import run_cli

    home = tmp_path / "models"
    home.mkdir(exist_ok=True)
    (home / "tiny").symlink_to(trained_folder)
    export(model_folder.load(trained_folder), tmp_path / "hf", "hf")  # its tokenizer, lm-eval's
    # texts the model never trained on, each shorter than its window: lm-eval scores each
    # text apart, in one window after the end-of-text marker, as `textgen eval` scores a
    # one-text corpus (over several texts, or longer ones, their windows differ)
    lm = model_folder.load(trained_folder)
    texts = [s.strip() + "." for s in make_corpus(40, seed=7).split(".") if s.strip()][:10]
    assert all(
        len(lm.tokenizer.encode_document(t)) <= lm.model_config.context_window for t in texts
    )
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "textgen_local.yaml").write_text(
        TASK.format(data=tmp_path / "data.jsonl")
    )

    with server(home) as (base, _):
        arguments = (
            f"model=tiny,base_url={base}/v1/completions,tokenizer_backend=huggingface,"
            f"tokenizer={tmp_path / 'hf'},max_length=32,num_concurrent=1,max_retries=1,"
            "tokenized_requests=True"
        )
        done = subprocess.run(
            [sys.executable, "-m", "lm_eval", "--model", "local-completions",
             "--model_args", arguments, "--tasks", "textgen_local",
             "--include_path", str(tmp_path / "tasks"), "--output_path", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                 "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")},
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (results,) = list((tmp_path / "out").rglob("results_*.json"))
    theirs = json.loads(results.read_text())["results"]["textgen_local"]["bits_per_byte,none"]
    bits = total_bytes = 0.0
    for i, text in enumerate(texts):
        (tmp_path / f"{i}.txt").write_text(text)
        code, out, err = run_cli(
            capsys, monkeypatch, "eval", str(tmp_path / f"{i}.txt"), "--model", str(trained_folder),
            "--json",
        )  # fmt: skip
        assert code == 0, err
        result = json.loads(out)
        bits += result["bits_per_byte"] * result["bytes"]
        total_bytes += result["bytes"]
    assert theirs == pytest.approx(bits / total_bytes, rel=1e-4)
