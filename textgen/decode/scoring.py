"""How likely the model finds a text it is given: each token's log-probability after the
tokens before it, and the alternatives it weighed there (the completions API's `echo`
with `logprobs`, the way evaluation harnesses score a text through a server).

    [eot, t1, t2, t3] --model--> logits at eot, t1, t2 --log-softmax--> (none for eot),
        log p(t1 | eot), log p(t2 | eot t1), log p(t3 | eot t1 t2), each with its top
        alternatives
"""

from __future__ import annotations

import math

import torch

from textgen.model.transformer import Transformer
from textgen.records import Candidate, TokenRecord
from textgen.text.tokenizer import StreamDecoder


@torch.inference_mode()
def token_logprobs(
    model: Transformer, ids: list[int], decoder: StreamDecoder, top: int = 0
) -> list[TokenRecord]:
    """A record for each of `ids` (at most one more than the context window: the last is
    predicted, never read): the text it adds, its log-probability given the ids before it
    (temperature 1; None for the first, which nothing precedes) and the `top` most likely
    tokens at its place. `prob` is the model's own probability: nothing is sampled here."""
    if not ids:
        return []
    records = [TokenRecord(0, ids[0], decoder.feed(ids[0]), 1.0, None)]
    if len(ids) > 1:
        inputs = torch.tensor([ids[:-1]], device=next(model.parameters()).device)
        logprobs = model(inputs)[0][0].float().log_softmax(-1)  # (T - 1, V)
        targets = torch.tensor(ids[1:], device=logprobs.device)
        chosen = logprobs.gather(1, targets[:, None]).squeeze(1).tolist()
        tops = logprobs.topk(min(top, logprobs.shape[-1])) if top else None
        for i, token_id in enumerate(ids[1:]):
            candidates = []
            if tops is not None:
                pairs = zip(tops.indices[i].tolist(), tops.values[i].tolist(), strict=True)
                candidates = [Candidate(t, lp, math.exp(lp)) for t, lp in pairs]
            text = decoder.feed(token_id)
            records.append(
                TokenRecord(0, token_id, text, math.exp(chosen[i]), chosen[i], candidates)
            )
    records[-1].text += decoder.flush()
    return records
