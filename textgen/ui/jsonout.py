"""Every JSON object textgen prints (`--json`), built in one place, in one style: plain
keys in snake_case, token lists as {"id", "text", ...} objects, log-probabilities in
nats, one object per line (JSON Lines) on stdout.

Inputs are plain records and numbers; imports no torch.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from textgen.records import EvalResult, Generation, HeadStats, Lens, Neighbours

TokenText = Callable[[int], str]  # a token id -> its text (textgen.text.tokenizer)


def write(data: dict[str, Any]) -> None:
    """One JSON object, one line, on stdout."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


def token(token_id: int, token_text: TokenText, **figures: Any) -> dict[str, Any]:
    return {"id": token_id, "text": token_text(token_id), **figures}


def figures(result: EvalResult) -> dict[str, Any]:
    """An evaluation's figures, as every command reports them."""
    return {
        "tokens": result.tokens,
        "bytes": result.bytes,
        "loss": result.loss,
        "bits_per_byte": result.bits_per_byte,
        "perplexity": result.perplexity,
        "mean_surprisal_bits": result.loss / math.log(2),
    }


def generation(
    generated: Generation, sample: int, model: str, token_text: TokenText
) -> dict[str, Any]:
    """One sample as `generate --json` prints it: the text, the settings, token counts,
    and per generated token its id, text, log-probability under the model (T=1),
    probability in the distribution sampled from, and the model's top alternatives."""
    settings = generated.settings
    one = generated.samples[sample]
    return {
        "model": model,
        "sample": sample,
        "prompt": generated.prompt,
        "text": one.text,
        "finish_reason": one.finish_reason,
        "settings": {**settings.to_dict(), "stop": list(settings.stop)},
        "prompt_tokens": generated.prompt_tokens,
        "prompt_tokens_dropped": generated.dropped_tokens,
        "generated_tokens": one.generated_tokens,
        "tokens": [
            token(
                r.token_id,
                token_text,
                logprob=r.logprob,
                prob=r.prob,
                top=[
                    token(c.token_id, token_text, logprob=c.logprob, prob=c.prob)
                    for c in r.candidates
                ],
            )
            for r in one.tokens
            if r.token_id is not None
        ],
    }


def tokenization(
    stats: dict[str, Any], token_ids: Sequence[int], token_text: TokenText
) -> dict[str, Any]:
    return {**stats, "token_list": [token(i, token_text) for i in token_ids]}


def scored(
    model: str,
    text: str,
    result: EvalResult,
    token_ids: Sequence[int],
    nlls: Sequence[float],
    token_text: TokenText,
) -> dict[str, Any]:
    tokens = [
        token(i, token_text, logprob=-nll, surprisal_bits=nll / math.log(2))
        for i, nll in zip(token_ids, nlls, strict=True)
    ]
    return {"model": model, "text": text, **figures(result), "tokens": tokens}


def attention(
    model: str,
    layer: int,
    token_ids: Sequence[int],
    heads: dict[int, list[list[float]]],
    token_text: TokenText,
) -> dict[str, Any]:
    return {
        "model": model,
        "layer": layer,
        "tokens": [token(i, token_text) for i in token_ids],
        "heads": {str(h): matrix for h, matrix in heads.items()},
    }


def evaluation(model: str, corpus: str, result: EvalResult) -> dict[str, Any]:
    return {"model": model, "corpus": corpus, **figures(result)}


def model_info(
    path: str,
    meta: dict[str, Any],
    parameters: int,
    metrics: Sequence[dict[str, Any]],
    samples: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """`info --json`: the model's settings as config.json holds them, its parameter count,
    its evaluations and the samples it wrote as it trained, in step order."""
    return {
        "path": path,
        "parameters": parameters,
        "model": meta["model"],
        "tokenizer": meta.get("tokenizer", {}),
        "training": meta.get("training", {}),
        "metrics": list(metrics),
        "samples": list(samples),
    }


def lens(model: str, reading: Lens, token_text: TokenText) -> dict[str, Any]:
    """`lens --json`: per depth and position, the top candidates and the probability of
    the text's real next token (null at the last position)."""
    first = reading.first_position
    return {
        "model": model,
        "tokens": [
            token(i, token_text, position=first + n) for n, i in enumerate(reading.token_ids)
        ],
        "dropped_tokens": reading.dropped_tokens,
        "depths": [
            {
                "depth": d,
                "name": name,
                "positions": [
                    {
                        "position": first + n,
                        "top": [
                            token(c.token_id, token_text, logprob=c.logprob, prob=c.prob)
                            for c in candidates
                        ],
                        "next_token_prob": reading.next_prob[d][n],
                    }
                    for n, candidates in enumerate(reading.top[d])
                ],
            }
            for d, name in enumerate(reading.depths)
        ],
    }


def neighbours(model: str, query: str, found: Neighbours, token_text: TokenText) -> dict[str, Any]:
    return {
        "model": model,
        "query": query,
        "terms": [
            {
                "sign": term.sign,
                "text": term.text,
                "tokens": [token(i, token_text) for i in term.token_ids],
            }
            for term in found.terms
        ],
        "neighbours": [
            token(n.token_id, token_text, similarity=n.similarity) for n in found.neighbours
        ],
    }


def heads(
    model: str, sample: str, tokens: int, stats: list[HeadStats], thresholds: dict
) -> dict[str, Any]:
    """`heads --json`: each head's statistics and label, and the labels' thresholds."""
    return {
        "model": model,
        "sample": sample,
        "tokens": tokens,
        "thresholds": {
            label: {"statistic": stat, "at_least": bound}
            for label, (stat, bound) in thresholds.items()
        },
        "heads": [vars(s).copy() for s in stats],
    }
