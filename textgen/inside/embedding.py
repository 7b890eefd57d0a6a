"""The embedding as a space of meanings: the tokens whose vectors point the same way as a
word's, analogies as vector sums ("king - man + woman"), and a 2-D map of the space.

Similarity is the cosine of the angle between embedding rows: the vectors' lengths mostly
track how often a token was trained, their directions what it means.
"""

from __future__ import annotations

import itertools
import re

import torch
import torch.nn.functional as F

from textgen.errors import SettingError
from textgen.records import Neighbour, Neighbours, Term
from textgen.text.tokenizer import Tokenizer

# An analogy's operators stand between spaces, so "well-known" stays one word.
_OPERATOR = re.compile(r"\s+([+-])\s+")
_LONE_SIGN = re.compile(r"(^|\s)[+-](\s|$)")
_EXAMPLE = 'e.g. "king - man + woman"'


def parse_query(query: str) -> list[tuple[int, str]]:
    """'king - man + woman' -> [(1, 'king'), (-1, 'man'), (1, 'woman')]. A text without
    operators is one term (several words in it are read as one phrase)."""
    parts = _OPERATOR.split(f" {query.strip()} ".replace("\n", " "))
    if not query.strip():
        raise SettingError(f"give a word, or an analogy of words joined by + and -, {_EXAMPLE}")
    terms = [(1, parts[0].strip())]
    signs, words = parts[1::2], parts[2::2]
    terms += [(1 if s == "+" else -1, w.strip()) for s, w in zip(signs, words, strict=True)]
    if any(not word or _LONE_SIGN.search(word) for _, word in terms):
        raise SettingError(
            f"{query.strip()!r}: every + and - needs a word on both sides, with spaces "
            f"around it: {_EXAMPLE}"
        )
    return terms


def term_ids(tokenizer: Tokenizer, word: str) -> list[int]:
    """The tokens a word stands for. A byte-level tokenizer spells a word differently at the
    start of a text ('king') and inside it (' king'): the spelling in fewer tokens is the
    one the tokenizer learned as a unit, and the inside one wins a tie."""
    if word.startswith((" ", "\n", "\t")):
        return tokenizer.encode(word)
    inside, alone = tokenizer.encode(" " + word), tokenizer.encode(word)
    return inside if len(inside) <= len(alone) else alone


def embedding_matrix(model: torch.nn.Module) -> torch.Tensor:
    """The input embedding's rows (vocab, C), in float32."""
    return model.embed.weight.detach().float()


def neighbours(model: torch.nn.Module, tokenizer: Tokenizer, query: str, top: int) -> Neighbours:
    """The `top` tokens whose embedding rows have the highest cosine similarity with the
    query's vector: a word's (the mean of its tokens' rows when it has several), or an
    analogy's sum of unit vectors, signs applied. The query's own tokens are left out."""
    weights = F.normalize(embedding_matrix(model), dim=-1)  # (vocab, C), unit rows
    terms = []
    vector = torch.zeros(weights.shape[1])
    for sign, word in parse_query(query):
        ids = term_ids(tokenizer, word)
        if not ids:
            raise SettingError(f"{word!r} has no tokens")
        terms.append(Term(sign, word, ids))
        vector += sign * F.normalize(weights[ids].mean(dim=0), dim=0)
    similarity = weights @ F.normalize(vector, dim=0)  # (vocab,)
    own = {i for term in terms for i in term.token_ids}
    order = similarity.argsort(descending=True).tolist()
    kept = [i for i in order if i not in own][:top]
    return Neighbours(terms, [Neighbour(i, float(similarity[i])) for i in kept])


def embedding_map(
    model: torch.nn.Module, ids: list[int], basis: list[int]
) -> tuple[list[list[float]], float]:
    """The embedding rows of `ids` projected on the first two principal components of the
    rows of `basis`: their 2-D coordinates, and the share of the basis rows' variance those
    two directions explain. (Rows the training never moved, of bytes the corpus lacks,
    would be outliers that own the first component: leave them out of `basis`.)"""
    weights = embedding_matrix(model)
    mean = weights[basis].mean(dim=0)
    _, singular, vh = torch.linalg.svd(weights[basis] - mean, full_matrices=False)
    variance = singular.square()
    explained = float(variance[:2].sum() / variance.sum())
    return ((weights[ids] - mean) @ vh[:2].T).tolist(), explained


def merged_tokens(tokenizer: Tokenizer) -> list[int]:
    """The tokens of two bytes or more: each a merge of a pair the corpus holds, so each
    was seen in training (single bytes may never occur in it)."""
    return [i for i, data in enumerate(tokenizer.token_bytes) if len(data) >= 2]


def frequent_tokens(tokenizer: Tokenizer, count: int) -> list[int]:
    """The first tokens a byte-level BPE tokenizer merged that hold a letter or digit. It
    merges in order of frequency, each time the most frequent pair of the corpus, so the
    first merged tokens are among the corpus's most frequent."""
    wordy = (
        i for i in merged_tokens(tokenizer) if any(c.isalnum() for c in tokenizer.token_text(i))
    )
    return list(itertools.islice(wordy, count))
