"""Decoding on the CPU without PyTorch's cost per operation: the model's own float32
weights and KV cache, shared (no copy), stepped in C (`step.c`, built by `native`) where
this machine has a C compiler, else in NumPy.

A decoding step of a small model is a few dozen operations on vectors of a few hundred
numbers. Through PyTorch each costs its dispatch (module calls, argument checks, the
allocator: several microseconds) more than its arithmetic; NumPy's cost per operation is
a fraction of that, and its matrix-vector products are BLAS's; in C the step is one call.
For the demo model (3x96) the C step is about 2.5 times NumPy's and 8 times PyTorch's;
for a model whose weights stream from memory (~10 M parameters and up) all are bound by
memory bandwidth (benchmarks/decode_speed.py has the figures).

What it computes is `Transformer.forward` for new tokens with a cache, to float32
rounding (the sums are taken in another order: logits agree to a few 1e-6, so a sampled
token can differ only where two candidates are that close). In C a prompt is read in the
same call (`read`); in NumPy it is read by the model itself (one forward pass over many
positions, where PyTorch's cost per operation does not matter), and the steps after it
write their keys and values into the same cache, so the two interleave freely.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import torch

from textgen.model.cache import KVCache, RowCache
from textgen.model.device import numpy_threads
from textgen.model.native import Model, library
from textgen.model.transformer import Transformer

_PER_LAYER = ("norm_attn", "qkv", "proj", "norm_mlp", "up", "down")  # step.c's Model, as layers
# tanh-approximated GELU's constants (as F.gelu(approximate="tanh"))
_GELU_A, _GELU_B = math.sqrt(2 / math.pi), 0.044715


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


class _Norm:
    """RMSNorm or LayerNorm (no bias) over the last axis, with the module's gain."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.gain = _array(module.weight)
        self.rms = isinstance(module, torch.nn.RMSNorm)
        eps = module.eps
        self.eps = torch.finfo(torch.float32).eps if eps is None else float(eps)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.rms:
            x = x - x.mean(-1, keepdims=True)
        scale = 1.0 / np.sqrt(np.vecdot(x, x) / x.shape[-1] + self.eps)
        return x * scale[:, None] * self.gain


def lay_out_for_steps(model: Transformer) -> None:
    """Store each matrix a decoding step multiplies by as its transpose, contiguous (the
    tensors keep their shapes and values; PyTorch multiplies by them as before, and a
    saved or exported model is written contiguous as always).

    A step computes x @ W.T for a few rows x. With W.T's rows in memory order, BLAS's
    matrix-vector kernel streams them once, each scaled by an element of x and summed;
    with W's own layout it takes a dot product per output instead. On a model whose
    weights stream from memory the first was faster on the 2-core machines measured
    (benchmarks/decode_speed.py: 1.3x the tokens/s at one thread for ~10 M parameters).
    For a model that only decodes: a model in training keeps its layout (its steps,
    resumed or not, must multiply exactly alike)."""
    done: set[int] = set()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and id(module.weight) not in done:
                done.add(id(module.weight))  # a tied unembedding is the embedding
                module.weight.data = module.weight.data.t().contiguous().t()


class CpuStep:
    """Decode one token per sequence: token ids (B,) in, next-token logits (B, V) out, the
    cache advanced. With a `KVCache` every sequence is at the same position and attends
    to the positions so far; with a `RowCache` each row is at its own and attends to its
    own positions only (in NumPy: the whole window, masked), so that what a row gets
    never depends on what the other rows hold (as `RowCache` promises). In C also a
    prompt at once (`read`) and some rows alone (`step_rows`). `for_model` says whether
    a model can be stepped this way (float32, on the CPU, in eval mode)."""

    def __init__(
        self, model: Transformer, cache: KVCache | RowCache, compiled: bool | None = None
    ) -> None:
        """`compiled`: the step in C (`native`) or in NumPy; None: in C where it can be (a
        C compiler, and the weights laid out for steps as a loaded model's are)."""
        c = self.config = model.config
        self.cache = cache
        self.keys, self.values = _array(cache.keys), _array(cache.values)  # (L, B, H, W, D)
        self.embed = _array(model.embed.weight)
        self.pos_embed = None if model.pos_embed is None else _array(model.pos_embed.weight)
        self.rotation = None
        if c.position == "rope":  # cos + i sin per (position, frequency), complex64
            cos, sin = _array(model.rope_cos), _array(model.rope_sin)
            self.rotation = (cos + 1j * sin).astype(np.complex64)
        self.layers = [
            (
                _Norm(block.norm_attn),
                _array(block.attn.qkv.weight).T,  # (C, 3C): x @ W.T without a transpose
                _array(block.attn.proj.weight).T,
                _Norm(block.norm_mlp),
                _array(block.mlp.up.weight).T,
                _array(block.mlp.down.weight).T,
            )
            for block in model.blocks
        ]
        self.norm_out = _Norm(model.norm_out)
        self.unembed = _array(model.unembed.weight).T
        self.qk_eps = torch.finfo(torch.float32).eps
        self.scale = np.float32(1.0 / math.sqrt(c.head_dim))
        numpy_threads(torch.get_num_threads())
        laid_out = all(
            w.flags.c_contiguous for layer in self.layers for w in layer[1:3] + layer[4:]
        )
        native = library() if compiled is not False and laid_out else None
        if compiled and native is None:
            raise ValueError(
                "no compiled step here: it needs the weights laid out for steps "
                "(lay_out_for_steps) and a C compiler (textgen.model.native)"
            )
        self.native = native
        self._model = self._native_model(model) if native is not None else None

    def _native_model(self, model: Transformer) -> tuple:
        """step.c's `Model` for these weights and this cache, with the arrays it points
        into (kept alive as long as it is)."""
        c, layers = self.config, self.layers
        keep: list = []

        def address(array: np.ndarray | None) -> int | None:
            if array is None:
                return None
            keep.append(array)
            return array.ctypes.data

        def per_layer(i: int) -> ctypes.Array:
            arrays = [layer[i].gain if i in (0, 3) else layer[i] for layer in layers]
            keep.extend(arrays)
            return (ctypes.c_void_p * len(arrays))(*(a.ctypes.data for a in arrays))

        pointers = [per_layer(i) for i in range(6)]
        keep.extend(pointers)
        rotary = self.rotation is not None
        cos = np.ascontiguousarray(self.rotation.real) if rotary else None
        sin = np.ascontiguousarray(self.rotation.imag) if rotary else None
        struct = Model(
            n_layer=c.n_layer,
            n_embd=c.n_embd,
            n_head=c.n_head,
            hidden=c.mlp_ratio * c.n_embd,
            vocab=c.vocab_size,
            window=self.keys.shape[3],
            rows=self.keys.shape[1],
            rms=self.norm_out.rms,
            relu2=c.activation == "relu2",
            qk_norm=c.qk_norm,
            softcap=c.logit_softcap or 0.0,
            eps=self.norm_out.eps,
            qk_eps=self.qk_eps,
            embed=address(self.embed),
            embed_row=self.embed.strides[0] // 4,
            embed_col=self.embed.strides[1] // 4,
            pos_embed=address(self.pos_embed),
            cos=address(cos),
            sin=address(sin),
            **{
                name: ctypes.cast(p, ctypes.c_void_p)
                for name, p in zip(_PER_LAYER, pointers, strict=True)
            },
            norm_out=address(self.norm_out.gain),
            unembed=address(self.unembed),
            keys=address(self.keys),
            values=address(self.values),
        )
        return ctypes.pointer(struct), keep

    @staticmethod
    def for_model(model: Transformer) -> bool:
        parameter = next(model.parameters())
        return (
            not model.training
            and parameter.device.type == "cpu"
            and all(p.dtype == torch.float32 for p in model.parameters())
        )

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if self.native is not None:
            return self._native_step(ids)
        c, cache = self.config, self.cache
        B, C, H, D = len(ids), c.n_embd, c.n_head, c.head_dim
        rows = isinstance(cache, RowCache)
        # where each row's new token goes: one position for all, or one a row (B,)
        at = cache.lengths.numpy() if rows else cache.length
        if int(np.max(at)) >= cache.capacity:
            raise ValueError(f"the cache is full ({cache.capacity} positions)")
        where = (np.arange(B), slice(None), at) if rows else (slice(None), slice(None), at)
        # a row cache's rows see their own positions only: 0 where seen, -inf past them
        hidden_past = None
        if rows:
            seen = np.arange(cache.capacity) <= at[:, None]  # (B, W)
            hidden_past = np.where(seen, np.float32(0), np.float32(-np.inf))
        x = self.embed[ids.numpy()]  # (B, C), a copy
        if self.pos_embed is not None:
            x += self.pos_embed[at]
        turn = None
        if self.rotation is not None:  # (D/2,), or (B, 1, D/2) for rows at their own
            turn = self.rotation[at][:, None] if rows else self.rotation[at]
        for layer, (norm_attn, qkv_w, proj_w, norm_mlp, up_w, down_w) in enumerate(self.layers):
            qkv = norm_attn(x) @ qkv_w  # (B, 3C)
            q, k, v = (qkv[:, i * C : (i + 1) * C].reshape(B, H, D) for i in range(3))
            if c.qk_norm:
                q, k = self._unit_rms(q), self._unit_rms(k)
            if turn is not None:
                q = (q.reshape(B, H, D // 2, 2).view(np.complex64)[..., 0] * turn).view(np.float32)
                k = (k.reshape(B, H, D // 2, 2).view(np.complex64)[..., 0] * turn).view(np.float32)
            keys, values = self.keys[layer], self.values[layer]  # (B, H, W, D)
            keys[where], values[where] = k, v
            if not rows:
                keys, values = keys[:, :, : at + 1], values[:, :, : at + 1]
            scores = np.matmul(keys, q[..., None])[..., 0] * self.scale  # (B, H, T)
            if rows:
                scores += hidden_past[:, None]
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            attended = np.matmul(scores[:, :, None, :], values)  # (B, H, 1, D)
            x += attended.reshape(B, C) @ proj_w
            hidden = norm_mlp(x) @ up_w
            if c.activation == "relu2":
                np.maximum(hidden, 0, out=hidden)
                hidden *= hidden
            else:
                hidden = 0.5 * hidden * (1 + np.tanh(_GELU_A * (hidden + _GELU_B * hidden**3)))
            x += hidden @ down_w
        logits = self.norm_out(x) @ self.unembed  # (B, V)
        if c.logit_softcap is not None:
            logits = c.logit_softcap * np.tanh(logits / c.logit_softcap)
        cache.advance(1)
        return torch.from_numpy(logits)

    def _native_step(self, ids: torch.Tensor) -> torch.Tensor:
        """The step in C: the same arithmetic, one call (a few microseconds of Python)."""
        cache, B = self.cache, len(ids)
        if isinstance(cache, RowCache):
            positions = cache.lengths.to(torch.int64)
        else:
            positions = torch.full((B,), cache.length, dtype=torch.int64)
        logits = self._run(torch.arange(B), positions, ids, B)
        cache.advance(1)
        return logits

    def step_rows(self, rows: list[int], positions: list[int], ids: list[int]) -> torch.Tensor:
        """One token into each of `rows` of a `RowCache` only, at `positions` (each row's
        length): their logits (len(rows), V). The other rows are not computed: in C each
        row is computed alone, so a row gets bitwise what a step of every row gives."""
        cache = self.cache
        if not isinstance(cache, RowCache) or self.native is None:
            raise ValueError("rows are stepped alone by the C step, in a row cache")
        at, where = torch.tensor(rows), torch.tensor(positions)
        logits = self._run(at, where, torch.tensor(ids), len(rows))
        cache.lengths[at] = where + 1
        return logits

    @property
    def reads_prompts(self) -> bool:
        """Whether `read` can take a prompt (the step in C; NumPy's takes one token)."""
        return self.native is not None

    def read(self, ids: torch.Tensor, row: int | None = None) -> torch.Tensor:
        """Several tokens into the cache at once, each seeing the ones before it: a prompt
        (B, T) after what a `KVCache` holds, or (T,) into `row` of a `RowCache` from its
        start; the logits after the last token of each row, (B, V) or (V,). Bitwise what
        reading them a token at a time gives."""
        cache = self.cache
        if row is None:
            B, T = ids.shape
            rows = torch.arange(B).repeat_interleave(T)
            positions = torch.arange(cache.length, cache.length + T).repeat(B)
            logits = self._run(rows, positions, ids.reshape(-1), B)
            cache.advance(T)
            return logits
        T = len(ids)
        rows = torch.full((T,), row, dtype=torch.int64)
        logits = self._run(rows, torch.arange(T), ids, 1)[0]
        cache.lengths[row] = T
        return logits

    def _run(
        self, rows: torch.Tensor, positions: torch.Tensor, ids: torch.Tensor, runs: int
    ) -> torch.Tensor:
        """step.c's textgen_step on these items (row, position, token): the logits after
        the last item of each of the `runs` runs of one row, (runs, V)."""
        rows, positions, ids = (t.to(torch.int64).contiguous() for t in (rows, positions, ids))
        logits = torch.empty(runs, self.config.vocab_size)
        struct, _ = self._model
        failed = self.native.textgen_step(
            struct,
            len(ids),
            rows.data_ptr(),
            positions.data_ptr(),
            ids.data_ptr(),
            logits.data_ptr(),
        )
        if failed == 2:  # nothing read or written
            raise ValueError(
                f"the cache is full ({self.cache.capacity} positions), or a token id is past "
                f"the vocabulary ({self.config.vocab_size} ids)"
            )
        if failed:
            raise MemoryError("no memory left for a decoding step")
        return logits

    def _unit_rms(self, x: np.ndarray) -> np.ndarray:
        """Each head's vector (..., D) to unit RMS (F.rms_norm without a gain)."""
        mean_square = np.vecdot(x, x) / x.shape[-1]
        return x * (1.0 / np.sqrt(mean_square + self.qk_eps))[..., None]
