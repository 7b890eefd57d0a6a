"""Exported models run in the tools people already use, computing what textgen computes:
checked by those tools themselves (transformers; llama.cpp through llama-cpp-python),
never by textgen reading its own files back. And fine-tuning from a trained model."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import TINY, make_corpus, one_line_error, run_cli

from textgen.decode.completion import Completion
from textgen.export import export
from textgen.settings import SampleConfig, TrainConfig
from textgen.store import folder as model_folder
from textgen.text.corpus import open_corpus
from textgen.training.run import train

# float32 on both sides, with the operations in another order: logits agree to this
LOGIT_TOLERANCE = 1e-4
AWKWARD = [
    "The cat sees the moon.",
    "emoji 😀👩‍👩‍👧 and flags 🇫🇷",
    "中文字符和日本語のテキスト",
    "control \x00\x01\x07\x1b[31m chars\x7f and \ttabs\r\n",
    "<|endoftext|> typed as text, and  double  spaces",
]
PROMPTS = ["The cat", "A child likes the moon. " * 6]  # the second reaches past position 64
SHAPES = {
    "default": {},  # rotary, RMSNorm, squared ReLU, tied: transformers' Arcee
    "untied": {"tie_embeddings": False},
    "classic": {"position": "learned", "norm": "layernorm", "activation": "gelu"},  # GPT-2
}


@pytest.fixture(scope="module")
def models(tmp_path_factory, corpus_file) -> dict[str, Path]:
    """Small models of each exportable kind, with a context past 64 positions."""
    folders = {}
    for name, changes in SHAPES.items():
        folder = tmp_path_factory.mktemp("export") / name
        shape = replace(TINY, context_window=96, **changes)
        config = TrainConfig(steps=150, batch_size=8, eval_interval=1000, seed=0, bpe_dropout=0.0)
        with open_corpus([str(corpus_file)]) as corpus:
            train(folder, corpus, config, shape, vocab_size=300)
        folders[name] = folder
    return folders


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, folder in models.items():
        out[name] = tmp_path_factory.mktemp("hf") / name
        export(model_folder.load(folder), out[name], "hf")
    return out


def textgen_logits(lm, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return lm.model(torch.tensor([ids]))[0][0]


def greedy_ids(lm, prompt: str, tokens: int) -> list[int]:
    completion = Completion(lm, prompt, SampleConfig(temperature=0, max_new_tokens=tokens))
    return [r.token_id for r in completion if r.token_id is not None]


def llama_logits(path: Path, ids: list[int]):  # noqa: ANN201 - (Llama, logits (T, V))
    """llama.cpp (llama-cpp-python) on a GGUF file: the model, and its logits over `ids`
    with a float32 key/value cache."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python: make verify-gguf")
    f32 = llama_cpp.GGML_TYPE_F32
    llm = llama_cpp.Llama(
        str(path), n_ctx=96, logits_all=True, verbose=False, n_threads=1, type_k=f32, type_v=f32
    )
    llm.eval(ids)
    return llm, torch.tensor(llm.scores[: len(ids)])


def llama_greedy(llm, prompt_ids: list[int], tokens: int) -> list[int]:
    """llama.cpp's greedy continuation of `prompt_ids`, `tokens` long."""
    chosen = []
    for token in llm.generate(prompt_ids, temp=0.0, top_k=1):
        chosen.append(token)
        if len(chosen) == tokens:
            break
    return chosen


def assert_greedy_by_textgen(lm, prompt_ids: list[int], chosen: list[int], tolerance: float):
    """Each token another tool chose greedily is textgen's most likely next token, or tied
    with it to within `tolerance` (where float arithmetic in another order may pick either;
    once a tie went the other way the texts differ, rightly, and the check ends). The
    texts must agree for most of their length for the check to mean anything."""
    ids = list(prompt_ids)
    for position, token in enumerate(chosen):
        logits = textgen_logits(lm, ids[-lm.model_config.context_window :])[-1]
        best = int(logits.argmax())
        if token != best:
            assert logits[best] - logits[token] < tolerance, (position, token, best)
            assert position >= len(chosen) // 2, f"diverged early, at {position}"
            return
        ids.append(token)


@pytest.mark.parametrize("name", list(SHAPES))
def test_transformers_loads_the_export_and_computes_the_same_logits(models, exported, name):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = model_folder.load(models[name])
    hf = AutoModelForCausalLM.from_pretrained(exported[name]).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported[name])
    assert type(hf).__name__ == ("GPT2LMHeadModel" if name == "classic" else "ArceeForCausalLM")
    for prompt in PROMPTS:
        ids = tokenizer(prompt).input_ids
        assert ids == lm.tokenizer.encode_document(prompt)
        with torch.no_grad():
            theirs = hf(torch.tensor([ids])).logits[0]
        assert (theirs - textgen_logits(lm, ids)).abs().max() < LOGIT_TOLERANCE
    ids = tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    generated = hf.generate(ids, do_sample=False, max_new_tokens=40, eos_token_id=None)
    chosen = generated[0, ids.shape[1] :].tolist()
    assert_greedy_by_textgen(lm, ids[0].tolist(), chosen, LOGIT_TOLERANCE)


@pytest.mark.parametrize("text", AWKWARD)
def test_the_exported_tokenizer_gives_textgen_s_ids(models, exported, text):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported["default"])
    lm = model_folder.load(models["default"])
    assert tokenizer(text).input_ids == lm.tokenizer.encode_document(text)
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_greedy_generation_in_transformers_matches_textgen_generate_t0(
    models, exported, capsys, monkeypatch
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    code, out, err = run_cli(
        capsys, monkeypatch, "generate", "The cat", "--model", str(models["default"]),
        "-t", "0", "-n", "30",
    )  # fmt: skip
    assert code == 0, err
    hf = AutoModelForCausalLM.from_pretrained(exported["default"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported["default"])
    ids = tokenizer("The cat", return_tensors="pt").input_ids
    generated = hf.generate(ids, do_sample=False, max_new_tokens=30, eos_token_id=None)
    chosen = generated[0, ids.shape[1] :].tolist()
    lm = model_folder.load(models["default"])
    assert_greedy_by_textgen(lm, ids[0].tolist(), chosen, LOGIT_TOLERANCE)
    if chosen == greedy_ids(lm, "The cat", 30):  # no tie went the other way: the same text
        assert tokenizer.decode(chosen) == out


def test_the_gguf_file_holds_llama_cpp_s_names_shapes_and_tokenizer(models, tmp_path):
    import gguf

    lm = model_folder.load(models["untied"])
    path = tmp_path / "m.gguf"
    export(lm, path, "gguf")
    reader = gguf.GGUFReader(path)
    fields = {key: field.contents() for key, field in reader.fields.items()}
    c = lm.model_config
    assert fields["general.architecture"] == "arcee"
    assert fields["arcee.block_count"] == c.n_layer
    assert fields["arcee.context_length"] == c.context_window
    assert fields["arcee.rope.dimension_count"] == c.head_dim
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.ggml.bos_token_id"] == lm.tokenizer.eot_id
    assert len(fields["tokenizer.ggml.tokens"]) == c.vocab_size
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    assert shapes["token_embd.weight"] == [c.n_embd, c.vocab_size]  # GGUF lists (in, out)
    assert shapes["output.weight"] == [c.n_embd, c.vocab_size]
    assert shapes["blk.0.attn_q.weight"] == [c.n_embd, c.n_embd]
    assert shapes["blk.1.ffn_up.weight"] == [c.n_embd, c.mlp_ratio * c.n_embd]
    assert len(reader.tensors) == 2 + 1 + 8 * c.n_layer  # embeddings, output, norm, blocks


def test_llama_cpp_runs_the_gguf_export_as_textgen_runs_the_model(models, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python: make verify-gguf")
    lm = model_folder.load(models["default"])
    path = tmp_path / "m.gguf"
    export(lm, path, "gguf")
    f32 = llama_cpp.GGML_TYPE_F32  # llama.cpp keeps keys and values in float16 by default
    llm = llama_cpp.Llama(
        str(path), n_ctx=96, logits_all=True, verbose=False, n_threads=1, type_k=f32, type_v=f32
    )
    for text in AWKWARD:  # llama.cpp tokenizes as textgen does
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == (
            lm.tokenizer.encode_document(text)
        )
    ids = lm.tokenizer.encode_document(PROMPTS[1])
    llm.reset()
    llm.eval(ids)
    theirs = torch.tensor(llm.scores[: len(ids)])
    assert (theirs - textgen_logits(lm, ids)).abs().max() < LOGIT_TOLERANCE
    llm.reset()
    prompt_ids = lm.tokenizer.encode_document(PROMPTS[0])
    chosen = llama_greedy(llm, prompt_ids, 30)
    assert_greedy_by_textgen(lm, prompt_ids, chosen, LOGIT_TOLERANCE)


# -- fine-tuning -----------------------------------------------------------------------------


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def test_fine_tuning_learns_the_new_text_and_leaves_the_base_as_it_was(
    tmp_path, trained_folder, capsys, monkeypatch
):
    base = tmp_path / "base"
    shutil.copytree(trained_folder, base)
    before = folder_digest(base)
    new_text = tmp_path / "new.txt"
    new_text.write_text(
        make_corpus(seed=7).replace("cat", "heron").replace("the moon", "a lantern")
    )

    def bits_per_byte(model: Path) -> float:
        code, out, err = run_cli(
            capsys, monkeypatch, "eval", str(new_text), "--model", str(model), "--json"
        )
        assert code == 0, err
        return json.loads(out)["bits_per_byte"]

    base_bpb = bits_per_byte(base)
    tuned = tmp_path / "tuned"
    options = ["--steps", "60", "--batch-size", "8", "--eval-interval", "100"]
    code, _, err = run_cli(
        capsys, monkeypatch, "train", str(new_text), "--model", str(tuned), "--from", str(base),
        *options,
    )  # fmt: skip
    assert code == 0, err
    assert "fine-tuning" in err
    assert bits_per_byte(tuned) < base_bpb
    assert folder_digest(base) == before  # byte for byte
    tuned_lm, base_lm = model_folder.load(tuned), model_folder.load(base)
    assert tuned_lm.tokenizer.to_json() == base_lm.tokenizer.to_json()
    assert tuned_lm.model_config.n_layer == base_lm.model_config.n_layer
    assert model_folder.load_train_state(tuned)["step"] == 60  # a run of its own


@pytest.mark.parametrize(
    "option, message",
    [
        (["--vocab-size", "512"], "--vocab-size: a model fine-tuned --from BASE keeps"),
        (["--size", "small"], "--size: a model fine-tuned --from BASE keeps"),
        (["--context", "64"], "--context: a model fine-tuned --from BASE keeps"),
    ],
)
def test_options_that_would_change_the_base_are_refused(
    tmp_path, trained_folder, corpus_file, capsys, monkeypatch, option, message
):
    code, _, err = run_cli(
        capsys, monkeypatch, "train", str(corpus_file), "--model", str(tmp_path / "t"),
        "--from", str(trained_folder), *option,
    )  # fmt: skip
    one_line_error(code, err, 2, message)


# -- bad input -------------------------------------------------------------------------------


def test_exporting_what_cannot_be_exported_is_one_line_and_writes_nothing(
    tmp_path, trained_folder, capsys, monkeypatch
):
    def textgen(*args):
        return run_cli(capsys, monkeypatch, "export", *args)

    code, _, err = textgen(str(tmp_path / "out"), "--model", str(tmp_path / "nothing"))
    one_line_error(code, err, 1, "no such model folder")
    odd = tmp_path / "qk"
    shutil.copytree(trained_folder, odd)
    config = odd / "config.json"
    config.write_text(config.read_text().replace('"qk_norm": false', '"qk_norm": true'))
    code, _, err = textgen(str(tmp_path / "out"), "--model", str(odd))
    one_line_error(code, err, 1, "qk_norm: no architecture in transformers or llama.cpp")
    taken = tmp_path / "taken.gguf"
    taken.write_bytes(b"the user's file")
    code, _, err = textgen(str(taken), "--model", str(trained_folder))
    one_line_error(code, err, 1, "exists and is not a GGUF export, so it is never replaced")
    assert taken.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qk", "taken.gguf"]


@pytest.mark.skipif(shutil.which("mount") is None, reason="no mount")
def test_a_read_only_destination_is_one_line(tmp_path, trained_folder, capsys, monkeypatch):
    where = tmp_path / "ro"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only filesystem here")
    try:
        for out in (where / "m", where / "m.gguf"):
            code, _, err = run_cli(
                capsys, monkeypatch, "export", str(out), "--model", str(trained_folder)
            )
            one_line_error(code, err, 1, "Read-only file system")
    finally:
        subprocess.run(["umount", "-l", str(where)])


@pytest.mark.parametrize("name", ["default", "classic"])
def test_a_padded_batch_in_transformers_generates_what_each_prompt_does_alone(
    models, exported, name
):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    hf = AutoModelForCausalLM.from_pretrained(exported[name]).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported[name])
    prompts = ["The cat", "A child likes the moon by the sea", "My friend"]
    lm = model_folder.load(models[name])
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    assert (batch.input_ids[:, -1] != tokenizer.pad_token_id).all()  # padded on the left
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)  # as generate makes them
    with torch.no_grad():
        last = hf(**batch, position_ids=positions).logits[:, -1]
    together = hf.generate(**batch, do_sample=False, max_new_tokens=12, eos_token_id=None)
    for row, prompt in enumerate(prompts):
        ids = lm.tokenizer.encode_document(prompt)
        assert (last[row] - textgen_logits(lm, ids)[-1]).abs().max() < LOGIT_TOLERANCE
        assert_greedy_by_textgen(lm, ids, together[row, -12:].tolist(), LOGIT_TOLERANCE)
    writer = pipeline("text-generation", model=hf, tokenizer=tokenizer, batch_size=3)
    outputs = writer(prompts, max_new_tokens=5, do_sample=False)
    assert [
        o[0]["generated_text"][: len(p)] for o, p in zip(outputs, prompts, strict=True)
    ] == prompts


def test_the_exported_tokenizer_cuts_a_long_text_to_its_end(models, exported):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported["default"])
    text = PROMPTS[1] * 4
    ids = tokenizer(text, truncation=True).input_ids
    assert len(ids) == tokenizer.model_max_length == 96
    assert tokenizer.decode(ids[-10:]) == tokenizer.decode(tokenizer(text).input_ids[-10:])


def test_a_q8_0_export_runs_in_llama_cpp_close_to_textgen(models, tmp_path):
    import gguf

    lm = model_folder.load(models["default"])
    path = tmp_path / "q8.gguf"
    export(lm, path, "gguf", "q8_0")
    kinds = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert kinds["blk.0.attn_q.weight"] == kinds["token_embd.weight"] == "Q8_0"
    assert kinds["output_norm.weight"] == "F32"
    assert path.stat().st_size < 0.4 * (4 * lm.model.num_parameters())
    ids = lm.tokenizer.encode_document(PROMPTS[1])
    _, theirs = llama_logits(path, ids)
    ours = textgen_logits(lm, ids)
    # 8-bit weights (each block of 32 to 1/254 of its largest): close, not equal; 0.11 at
    # most on the fixture's model (f32 exports agree to 1e-4), and the same loss below
    assert (theirs - ours).abs().max() < 0.15
    targets = torch.tensor(ids[1:])[:, None]
    nll = [-x[:-1].log_softmax(-1).gather(1, targets).mean() for x in (theirs, ours)]
    assert abs(nll[0] - nll[1]) < 0.01 * nll[1]


def test_q8_0_needs_rows_in_blocks_of_32(tmp_path):
    from textgen.errors import TextgenError
    from textgen.export.gguf import check_dtype
    from textgen.settings import ModelConfig

    check_dtype(ModelConfig(n_embd=64, n_head=4, vocab_size=300), "q8_0")
    with pytest.raises(TextgenError, match="blocks of 32 values.*n_embd 48"):
        check_dtype(ModelConfig(n_embd=48, n_head=4, vocab_size=300), "q8_0")


def test_llama_cpp_runs_the_classic_recipe_as_gpt2(models, tmp_path):
    """Learned positions, LayerNorm and GELU: llama.cpp's gpt2 architecture."""
    lm = model_folder.load(models["classic"])
    path = tmp_path / "classic.gguf"
    export(lm, path, "gguf")
    ids = lm.tokenizer.encode_document(PROMPTS[1])
    llm, theirs = llama_logits(path, ids)
    # ggml's GELU reads a float16 table of the curve: logits agree less closely (1e-3 seen)
    gelu_tolerance = 5e-3
    assert (theirs - textgen_logits(lm, ids)).abs().max() < gelu_tolerance
    llm.reset()
    prompt_ids = lm.tokenizer.encode_document(PROMPTS[0])
    chosen = llama_greedy(llm, prompt_ids, 30)
    assert_greedy_by_textgen(lm, prompt_ids, chosen, gelu_tolerance)
