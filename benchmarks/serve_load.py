"""Serving under load: aggregate tokens/s and time to first token as clients multiply,
continuous batching against one request at a time, side by side in one run.

    python benchmarks/serve_load.py                        # the demo model (make demo)
    python benchmarks/serve_load.py --model mine --clients 1 4 16 32 --tokens 128
    python benchmarks/serve_load.py --url http://127.0.0.1:8080/v1 --served-model any

Each variant is a real `textgen serve` process on a loopback port with its default
threads (batched: --slots 16, the default; one at a time: --slots 1, the others wait in
its queue). Each of C clients streams
--rounds completions back to back (seeded, temperature 1, --tokens each), as the openai
client does over Server-Sent Events; a token is counted from the usage the server reports,
the first token's time from the request to its first text chunk. With --llama-server
PATH the same model, exported to GGUF (`textgen export`), is served by llama.cpp's own C++
server beside it (`-np 16 -t 1`: 16 parallel sequences on one thread, as textgen serves by
default), with the same prompts and lengths. With --url the same load is sent to any
OpenAI-compatible server (ollama's `/v1`, say). A failed request (an HTTP error, a broken
stream) is counted, not fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

PROMPT = "The list"


@dataclass
class Result:
    tokens: int
    first_token_s: float
    failed: bool = False


async def one_request(client: httpx.AsyncClient, base: str, model: str, seed: int, tokens: int):
    body = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": tokens,
        "temperature": 1.0,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    try:
        return await _request(client, base, body)
    except (httpx.HTTPError, json.JSONDecodeError, RequestFailed):
        return Result(0, 0.0, failed=True)


class RequestFailed(Exception):
    pass


async def _request(client: httpx.AsyncClient, base: str, body: dict) -> Result:
    started = time.perf_counter()
    first, counted, usage = None, 0, None
    async with client.stream("POST", f"{base}/completions", json=body) as response:
        if response.status_code != 200:
            raise RequestFailed(f"HTTP {response.status_code}: {await response.aread()}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or []:
                if choice.get("text"):
                    counted += 1
                    if first is None:
                        first = time.perf_counter() - started
    # servers that send no usage: count text chunks (one a token, as llama.cpp sends them)
    if first is None:
        raise RequestFailed("no text")
    return Result(usage if usage is not None else counted, first)


async def load(base: str, model: str, clients: int, rounds: int, tokens: int):
    """`clients` concurrent clients, each `rounds` requests in a row: (results, seconds)."""
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def one_client(index: int) -> list[Result]:
            return [
                await one_request(client, base, model, 1000 * index + r, tokens)
                for r in range(rounds)
            ]

        started = time.perf_counter()
        per_client = await asyncio.gather(*(one_client(i) for i in range(clients)))
        seconds = time.perf_counter() - started
    return [r for results in per_client for r in results], seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def textgen_server(model: str, slots: int, threads: int | None):
    port = free_port()
    command = [sys.executable, "-m", "textgen", "serve", "--model", model, "--port", str(port)]
    command += ["--slots", str(slots), "--queue", "256"]
    command += ["--threads", str(threads)] if threads else []
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", process, f"textgen serve --model {model}")
        yield base, process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def wait_ready(url: str, process: subprocess.Popen, name: str) -> None:
    for _ in range(1200):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"{name} exited ({process.returncode})")
        time.sleep(0.1)
    raise SystemExit(f"{name}: not ready after 120 s")


@contextmanager
def llama_server(binary: str, model: str, parallel: int, threads: int):
    """llama.cpp's own server on the model's GGUF export: `parallel` sequences, each with
    the model's whole context window."""
    import tempfile

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        gguf = f"{tmp}/model.gguf"
        subprocess.run(
            [sys.executable, "-m", "textgen", "export", "--model", model, "--format", "gguf", gguf],
            check=True,
            capture_output=True,
        )
        window = json.loads(
            subprocess.run(
                [sys.executable, "-m", "textgen", "info", "--model", model, "--json"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )["model"]["context_window"]
        command = [binary, "-m", gguf, "--port", str(port), "--host", "127.0.0.1"]
        command += ["-np", str(parallel), "-t", str(threads), "-tb", str(threads)]
        command += ["-c", str(parallel * window), "--no-webui"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(f"http://127.0.0.1:{port}/health", process, "llama-server")
            yield f"http://127.0.0.1:{port}/v1", process
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(name: str, base: str, model: str, args) -> dict[int, float]:
    """Rows of the table for one server; returns clients -> aggregate tokens/s."""
    asyncio.run(load(base, model, 1, 1, 8))  # warm-up: load the model, first kernels
    rates = {}
    for clients in args.clients:
        results, seconds = asyncio.run(load(base, model, clients, args.rounds, args.tokens))
        tokens = sum(r.tokens for r in results)
        rates[clients] = tokens / seconds
        firsts = [1000 * r.first_token_s for r in results if not r.failed] or [float("nan")]
        p50, p95 = statistics.median(firsts), percentile(firsts, 0.95)
        failed = sum(r.failed for r in results)
        print(
            f"| {name:<16} | {clients:>7} | {len(results):>8} | {failed:>6} | {tokens:>7} "
            f"| {rates[clients]:>8.0f} | {rates[clients] / rates[args.clients[0]]:>4.1f}x "
            f"| {p50:>11.0f} | {p95:>11.0f} |",
            flush=True,
        )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help="a textgen model (default: demo)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--rounds", type=int, default=2, help="requests each client sends")
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens of each request")
    parser.add_argument("--slots", type=int, default=16, help="the batched server's slots")
    parser.add_argument("--threads", type=int, default=None, help="the servers' --threads")
    parser.add_argument("--url", help="also load this OpenAI-compatible server (its /v1)")
    parser.add_argument("--served-model", default="default", help="the model name for --url")
    parser.add_argument("--skip-textgen", action="store_true", help="only the other servers")
    parser.add_argument(
        "--llama-server", metavar="PATH", help="llama.cpp's llama-server binary, to run beside"
    )
    parser.add_argument("--llama-parallel", type=int, default=16, help="llama-server's -np")
    args = parser.parse_args()

    print(
        f"{args.rounds} streamed completions of up to {args.tokens} tokens per client; "
        f"{os.cpu_count()} CPU cores, server threads: {args.threads or 'default'}\n"
    )
    print(
        "| server           | clients | requests | failed |  tokens | tokens/s | vs 1 "
        "| TTFT p50 ms | TTFT p95 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    if not args.skip_textgen:
        for name, slots in ((f"batched ({args.slots})", args.slots), ("one at a time", 1)):
            with textgen_server(args.model, slots, args.threads) as (base, _):
                summary[name] = measure(name, base, args.model, args)
    if args.llama_server:
        name = f"llama-server {args.llama_parallel}"
        threads = args.threads or 1
        with llama_server(args.llama_server, args.model, args.llama_parallel, threads) as (base, _):
            summary[name] = measure(name, base, "model", args)
    if args.url:
        summary[args.url] = measure("--url", args.url.rstrip("/"), args.served_model, args)
    if args.llama_server and not args.skip_textgen:
        batched, llama = summary[f"batched ({args.slots})"], summary[name]
        print(
            "\ntextgen batched / llama-server: "
            + ", ".join(f"{c} clients {batched[c] / llama[c]:.2f}x" for c in args.clients)
        )
    if {f"batched ({args.slots})", "one at a time"} <= set(summary) and {1, 16} <= set(
        args.clients
    ):
        batched, alone = summary[f"batched ({args.slots})"], summary["one at a time"]
        print(
            f"\nat 16 clients: batched {batched[16]:.0f} tokens/s = "
            f"{batched[16] / alone[1]:.1f}x one client alone (one at a time, "
            f"{alone[1]:.0f} tokens/s), {batched[16] / batched[1]:.1f}x the batched server's "
            "own one-client figure; target 4x"
        )


if __name__ == "__main__":
    main()
