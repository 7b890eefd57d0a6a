"""Decoding speed at batch 1: full recompute vs KV cache (its steps through PyTorch, and
in NumPy as `generate` runs them on the CPU) vs Hugging Face, and the same exported model
decoded by textgen, transformers and llama.cpp.

    python benchmarks/decode_speed.py            # both sizes, 256 new tokens
    python benchmarks/decode_speed.py --tokens 512 --repeats 5
    python benchmarks/decode_speed.py --llama-bin ~/llama.cpp/build/bin   # + llama-bench

All variants run in one process on the same weights-shaped models, greedy, so the
ratios are what matter (the machines are shared and noisy; the best of --repeats runs
is reported). Hugging Face `transformers` is a benchmark-only extra
(`pip install -e '.[bench]'`); without it that row is skipped, and so are llama-cpp-python's
(`make llama`) and llama.cpp's own binaries' (`--llama-bin`, built from llama.cpp's
source: `cmake -B build && cmake --build build --target llama-bench`). Then the start-up of the
CLI: `textgen --help`, `python -c "import torch"`, and time to the first generated token,
with its breakdown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from copy import deepcopy
from functools import partial
from pathlib import Path

import torch

from textgen.decode.loop import generate
from textgen.model import native
from textgen.model.cpu_step import CpuStep, lay_out_for_steps
from textgen.model.loaded import LoadedModel
from textgen.model.transformer import Transformer
from textgen.settings import ModelConfig, SampleConfig
from textgen.store import folder as model_folder
from textgen.text.tokenizer import Tokenizer

SIZES = {  # same width, depth and vocabulary for textgen and GPT-2
    "small (4x128)": dict(n_layer=4, n_embd=128, n_head=4),
    "~10M (6x384)": dict(n_layer=6, n_embd=384, n_head=6),
}
VOCAB, WINDOW, PROMPT = 2048, 512, 16


def best_rate(fn, tokens: int, repeats: int) -> float:
    """Tokens per second of the fastest of `repeats` runs (after one warm-up)."""
    fn()
    best = min(timed(fn) for _ in range(repeats))
    return tokens / best


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.inference_mode()
def full_recompute(model: Transformer, prompt: list[int], n: int) -> None:
    """nanoGPT's sampler: the whole context through the model for every new token."""
    ids = torch.tensor([prompt])
    for _ in range(n):
        logits, _ = model(ids[:, -WINDOW:])
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)


def kv_cache(
    model: Transformer, prompt: list[int], n: int, fast_step: bool = True, native: bool = True
) -> None:
    """textgen's decoding loop: on the CPU in float32 its steps run in C (`CpuStep` with
    `native.library()`), with `native` False in NumPy, with `fast_step` False through the
    model's PyTorch forward pass."""
    settings = SampleConfig(temperature=0, max_new_tokens=n)
    with native_off(not native):
        for _ in generate(model, prompt, settings, fast_step=fast_step):
            pass


@contextmanager
def native_off(off: bool):
    """The C step unavailable for a while (TEXTGEN_NATIVE=0): steps in NumPy."""
    if not off:
        yield
        return
    os.environ["TEXTGEN_NATIVE"] = "0"
    native.library.cache_clear()
    try:
        yield
    finally:
        del os.environ["TEXTGEN_NATIVE"]
        native.library.cache_clear()


def as_loaded(model: Transformer) -> Transformer:
    """A copy of `model` as `textgen generate` loads it (`store.folder.load`): a float32
    model's matrices laid out for the NumPy step."""
    copy = deepcopy(model)
    if CpuStep.for_model(copy):
        lay_out_for_steps(copy)
    return copy


def hugging_face(shape: dict, n: int, dtype: torch.dtype):
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=WINDOW, bos_token_id=0, eos_token_id=0, **shape
    )
    model = GPT2LMHeadModel(config).eval().to(dtype)
    ids = torch.randint(1, VOCAB, (1, PROMPT))

    @torch.inference_mode()
    def run() -> None:
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )

    return run


def decode_table(tokens: int, repeats: int) -> None:
    print(
        f"decode at batch 1: {PROMPT}-token prompt, {tokens} new tokens, greedy, "
        f"{torch.get_num_threads()} threads; tokens/s, best of {repeats}"
    )
    print(
        f"{'model':<17}{'params':>7}{'dtype':>10}{'full recompute':>16}{'KV torch':>10}"
        f"{'KV NumPy':>10}{'KV cache':>10}{'HF generate':>13}{'KV/full':>9}{'KV/HF':>7}"
    )
    for name, shape in SIZES.items():
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            torch.manual_seed(0)
            config = ModelConfig(vocab_size=VOCAB, context_window=WINDOW, **shape)
            model = Transformer(config).eval().to(dtype)
            prompt = torch.randint(1, VOCAB, (PROMPT,)).tolist()
            full = best_rate(partial(full_recompute, model, prompt, tokens), tokens, repeats)
            torch_steps = partial(kv_cache, model, prompt, tokens, fast_step=False)
            in_torch = best_rate(torch_steps, tokens, repeats)
            cached = best_rate(partial(kv_cache, as_loaded(model), prompt, tokens), tokens, repeats)
            in_numpy = partial(kv_cache, as_loaded(model), prompt, tokens, native=False)
            numpy_rate = best_rate(in_numpy, tokens, repeats)
            hf_run = hugging_face(shape, tokens, dtype)
            hf = best_rate(hf_run, tokens, repeats) if hf_run else float("nan")
            params = model.num_parameters() / 1e6
            print(
                f"{name:<17}{params:>6.1f}M{str(dtype)[6:]:>10}{full:>16.0f}{in_torch:>10.0f}"
                f"{numpy_rate:>10.0f}{cached:>10.0f}"
                f"{hf:>13.0f}{cached / full:>8.1f}x{cached / hf:>6.1f}x"
            )


EXPORT_SIZES = {  # the default recipe's size on the built-in corpus (depth 3), and ~10 M
    "default (3x96)": dict(n_layer=3, n_embd=96, n_head=3),
    "~10M (6x384)": dict(n_layer=6, n_embd=384, n_head=6),
}


def exported_runners(
    model: Transformer, tokenizer: Tokenizer, folder: Path, prompt: list[int], n: int
) -> dict:
    """The same model, exported, as each tool decodes it: greedy, batch 1, n tokens."""
    from textgen.export import export

    lm = LoadedModel(folder, model, tokenizer, {})
    laid_out = as_loaded(model)
    runners = {
        "textgen": partial(kv_cache, laid_out, prompt, n),
        "textgen, NumPy step": partial(kv_cache, laid_out, prompt, n, native=False),
        # the NumPy step on the weights as trained (not laid out for steps)
        "textgen, NumPy, W": partial(kv_cache, model, prompt, n, native=False),
        "textgen, torch step": partial(kv_cache, model, prompt, n, fast_step=False),
    }
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        AutoModelForCausalLM = None  # noqa: N806
    if AutoModelForCausalLM is not None:
        export(lm, folder / "hf", "hf")
        hf = AutoModelForCausalLM.from_pretrained(folder / "hf").eval()
        ids = torch.tensor([prompt])

        @torch.inference_mode()
        def transformers_run() -> None:
            hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
            )

        runners["transformers"] = transformers_run
    try:
        import llama_cpp
    except ImportError:
        return runners
    export(lm, folder / "m.gguf", "gguf")
    for threads in sorted({1, torch.get_num_threads()}):
        llm = llama_cpp.Llama(
            str(folder / "m.gguf"), n_ctx=WINDOW, n_threads=threads, verbose=False, n_batch=512
        )

        def llama_run(llm=llm) -> None:
            llm.reset()
            for count, _ in enumerate(llm.generate(prompt, temp=0.0, top_k=1, reset=True), 1):
                if count == n:
                    break

        runners[f"llama.cpp {threads}t"] = llama_run
    return runners


def llama_bench(binary: str, gguf: Path, tokens: int, threads: int, repeats: int) -> float:
    """llama.cpp's own measure of its decoding speed (`llama-bench -p 0 -n N`: generated
    tokens/s at batch 1, model loading left out), the mean of `repeats` runs."""
    out = subprocess.run(
        [binary, "-m", str(gguf), "-p", "0", "-n", str(tokens), "-t", str(threads)]
        + ["-r", str(repeats), "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(json.loads(out)[0]["avg_ts"])


def export_table(tokens: int, repeats: int, llama_bin: Path | None = None) -> None:
    """The same exported model decoded by textgen, transformers and llama.cpp (f32): the
    llama-cpp-python binding, and with `llama_bin` llama.cpp's own C++ `llama-bench`."""
    threads = torch.get_num_threads()
    print(
        f"\nthe same model, exported: tokens/s at batch 1, greedy, {tokens} new tokens after "
        f"{PROMPT}; float32; best of {repeats} (textgen and transformers at 1 and {threads} "
        "threads, llama.cpp at its n_threads)"
    )
    print(
        f"{'model':<17}{'params':>7}  {'tool':<18}{'1 thread':>10}{'all':>10}{'vs llama.cpp':>14}"
    )
    from pydoc_data.topics import topics

    tokenizer = Tokenizer.train(list(topics.values()), VOCAB)
    for name, shape in EXPORT_SIZES.items():
        torch.manual_seed(0)
        config = ModelConfig(vocab_size=tokenizer.vocab_size, context_window=WINDOW, **shape)
        model = Transformer(config).eval()
        prompt = torch.randint(1, VOCAB, (PROMPT,)).tolist()
        with tempfile.TemporaryDirectory() as tmp:
            runners = exported_runners(model, tokenizer, Path(tmp), prompt, tokens)
            rates = {}
            if llama_bin is not None:
                from textgen.export import export

                gguf = Path(tmp) / "bench.gguf"
                export(LoadedModel(Path(tmp), model, tokenizer, {}), gguf, "gguf")
                for t in sorted({1, threads}):
                    rate = llama_bench(str(llama_bin / "llama-bench"), gguf, tokens, t, repeats)
                    rates[f"llama-bench {t}t"] = (rate, rate)
            for tool, run in runners.items():
                if tool.startswith("llama.cpp"):
                    rates[tool] = (best_rate(run, tokens, repeats),) * 2
                    continue
                torch.set_num_threads(1)
                one = best_rate(run, tokens, repeats)
                torch.set_num_threads(threads)
                rates[tool] = (one, best_rate(run, tokens, repeats))
        llama = [max(r) for tool, r in rates.items() if tool.startswith("llama")]
        reference = max(llama) if llama else float("nan")  # llama.cpp at its best
        params = model.num_parameters() / 1e6
        for tool, (one, every) in rates.items():
            if tool.startswith("llama"):
                shown = f"{one:>10.0f}{'':>10}" if tool.endswith(" 1t") else f"{'':>10}{one:>10.0f}"
            else:
                shown = f"{one:>10.0f}{every:>10.0f}"
            ratio = max(one, every) / reference
            print(f"{name:<17}{params:>6.1f}M  {tool:<18}{shown}{ratio:>13.2f}x")


PHASES = r"""
import sys, time, json
t0 = time.perf_counter()
import torch
from textgen.store import folder as model_folder
from textgen.decode.completion import Completion
from textgen.settings import SampleConfig
t1 = time.perf_counter()
lm = model_folder.load(model_folder.resolve(sys.argv[1]))
t2 = time.perf_counter()
completion = Completion(lm, "The list", SampleConfig(max_new_tokens=2, seed=0))
records = iter(completion)
t3 = time.perf_counter()
next(records)
t4 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "model load": t2 - t1, "tokenize": t3 - t2,
                  "prefill + first token": t4 - t3}))
"""


def wall(args: list[str], repeats: int) -> float:
    return min(
        timed(lambda: subprocess.run(args, capture_output=True, check=True)) for _ in range(repeats)
    )


def first_byte(args: list[str], repeats: int) -> float:
    """Seconds from starting the process to the first byte on its stdout."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        process.stdout.read(1)
        best = min(best, time.perf_counter() - start)
        process.kill()
        process.wait()
    return best


def startup_table(repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bench"
        torch.manual_seed(0)
        from pydoc_data.topics import topics

        tokenizer = Tokenizer.train(list(topics.values()), VOCAB)
        config = ModelConfig(
            vocab_size=tokenizer.vocab_size, context_window=128, **SIZES["small (4x128)"]
        )
        model = Transformer(config)
        model_folder.save_tokenizer(folder, tokenizer)
        model_folder.save_weights(folder, model)
        model_folder.save_config(folder, config, tokenizer)
        exe = [sys.executable, "-m", "textgen"]
        env_python = [sys.executable]
        interpreter = wall(env_python + ["-c", "pass"], repeats)
        torch_import = wall(env_python + ["-c", "import torch"], repeats)
        help_time = wall(exe + ["--help"], repeats)
        ttft = first_byte(
            exe
            + [
                "generate",
                "The list",
                "--model",
                str(folder),
                "-n",
                "50",
                "--seed",
                "0",
                "-t",
                "0",
            ],
            repeats,
        )
        phases = json.loads(
            subprocess.run(
                env_python + ["-c", PHASES, str(folder)], capture_output=True, text=True, check=True
            ).stdout
        )
    print("\nstart-up (best of", repeats, "runs, wall clock)")
    print(f"  python -c pass                 {interpreter:6.3f} s")
    print(f"  python -c 'import torch'       {torch_import:6.3f} s")
    print(f"  textgen --help                 {help_time:6.3f} s   (target <= 0.3 s)")
    print(
        f"  textgen generate: first token  {ttft:6.3f} s   (target <= import torch + 0.3 = "
        f"{torch_import + 0.3:.3f} s)"
    )
    print("  breakdown inside the process:")
    for phase, seconds in phases.items():
        print(f"    {phase:<28}{seconds:6.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument(
        "--llama-bin",
        type=Path,
        metavar="DIR",
        help="a folder with llama.cpp's binaries (llama-bench): its own decoding speed too",
    )
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    decode_table(args.tokens, args.repeats)
    export_table(args.tokens, args.repeats, args.llama_bin)
    if not args.skip_startup:
        startup_table(args.repeats)


if __name__ == "__main__":
    main()
