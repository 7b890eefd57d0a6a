"""The transformer: token ids in, next-token logits out.

    ids --embedding (+ positions)--> vectors --[attention -> MLP] x n_layer--> norm
        --unembedding--> logits

Design choices (each one swappable through `ModelConfig`, so recipes can be compared):
- pre-norm residual blocks: x = x + attn(norm(x)); x = x + mlp(norm(x))
- positions: rotary embeddings (default; attention then depends only on relative
  position) or learned absolute positions (GPT-2)
- norm: RMSNorm (default) or LayerNorm, without biases
- MLP: squared ReLU (default) or GELU, 4x wide, no biases
- dropout on the embeddings and on each residual branch (none by default)
- unembedding tied to the embedding by default (fewer parameters for small models)
- a KV cache for decoding: the keys and values of past tokens are kept, so each new
  token costs one position of work instead of the whole context
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from textgen.model.cache import KVCache, RowCache
from textgen.model.kernels import dropout, squared_relu
from textgen.settings import ModelConfig


def rotary_tables(
    head_dim: int, positions: torch.Tensor, base: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angle for each (position, frequency): (T, head_dim/2)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device)
    inv_freq = 1.0 / (base ** (exponents / head_dim))
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate each pair of channels (0, 1), (2, 3), ... of x (B, H, T, D) by its position's
    angle: as complex numbers, one multiplication by cos + i sin, (T, D/2). Under
    torch.compile `rotation` is the real pair (cos, sin), (2, T, D/2), and the same
    rotation is spelled out (inductor generates no code for complex numbers)."""
    if not rotation.is_complex():
        cos, sin = rotation
        even, odd = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, H, T, D/2) each
        turned = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
        return turned.flatten(-2).type_as(x)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, H, T, D/2)
    return torch.view_as_real(pairs * rotation).flatten(-2).type_as(x)


class Linear(nn.Linear):
    """nn.Linear without an initialisation of its own: a new Transformer initialises
    every weight itself (`_init_all`), and a loaded model's weights come from its file,
    so torch's default initialisation would be work thrown away (and, on the meta
    device, it loads torch's compiler: a second of start-up)."""

    def reset_parameters(self) -> None:
        pass


class Embedding(nn.Embedding):
    """nn.Embedding without an initialisation of its own (see `Linear`)."""

    def reset_parameters(self) -> None:
        pass


def make_norm(config: ModelConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd)
    return nn.LayerNorm(config.n_embd, bias=False)


class CausalSelfAttention(nn.Module):
    """Each position asks a question (query), every earlier position offers an answer (key)
    and a message (value); the softmax of query.key scores weights the messages. Future
    positions are masked so no token can see what comes after it."""

    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        self.config = config
        self.layer_index = layer_index
        self.qkv = Linear(config.n_embd, 3 * config.n_embd, bias=False)  # fused Q, K, V
        self.proj = Linear(config.n_embd, config.n_embd, bias=False)

    def queries_keys_values(
        self, x: torch.Tensor, rotary: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> q, k, v (B, H, T, D), positions applied."""
        B, T, C = x.shape
        H, D = self.config.n_head, self.config.head_dim
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, H, D).transpose(1, 2)
        if self.config.qk_norm:  # unit RMS per head: |q.k| / sqrt(D) <= sqrt(D)
            q, k = F.rms_norm(q, (D,)), F.rms_norm(k, (D,))
        if rotary is not None:
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,
        rotary: torch.Tensor | None,
        cache: KVCache | RowCache | None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.queries_keys_values(x, rotary)
        mask, causal = None, True
        if cache is not None:  # keys and values of earlier tokens too
            k, v, mask, causal = cache.attend(self.layer_index, k, v)
        # No dropout on the attention weights: it forces SDPA's slow path on CPU; dropout
        # acts on the embeddings and the residual branches instead.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    """The same small network applied to every position on its own."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden = config.mlp_ratio * config.n_embd
        self.up = Linear(config.n_embd, hidden, bias=False)
        self.down = Linear(hidden, config.n_embd, bias=False)
        self.activation = config.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        # GELU's tanh approximation (as GPT-2): the same curve, several times cheaper on CPU
        h = squared_relu(h) if self.activation == "relu2" else F.gelu(h, approximate="tanh")
        return self.down(h)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        self.norm_attn = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_index)
        self.norm_mlp = make_norm(config)
        self.mlp = MLP(config)
        self.dropout = config.dropout

    def forward(self, x, rotary, cache):
        x = x + dropout(self.attn(self.norm_attn(x), rotary, cache), self.dropout, self.training)
        return x + dropout(self.mlp(self.norm_mlp(x)), self.dropout, self.training)


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig, init_weights: bool = True) -> None:
        """`init_weights=False` skips the (slow, for large models) random initialisation,
        for weights that are loaded right after."""
        super().__init__()
        self.config = config
        self.embed = Embedding(config.vocab_size, config.n_embd)
        self.pos_embed = (
            Embedding(config.context_window, config.n_embd)
            if config.position == "learned"
            else None
        )
        if config.position == "rope":
            # derived, not saved: (context_window, head_dim/2) each; see reset_buffers
            self.register_buffer("rope_cos", torch.empty(0), persistent=False)
            self.register_buffer("rope_sin", torch.empty(0), persistent=False)
            self.reset_buffers()
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm_out = make_norm(config)
        self.unembed = Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.unembed.weight = self.embed.weight
        if init_weights:
            self._init_all()

    def _init_all(self) -> None:
        self.apply(self._init_weights)
        # Residual projections scaled down so the residual stream's variance does not grow
        # with depth (GPT-2).
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                if self.config.zero_init_proj:
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    def rotation(self, positions: torch.Tensor) -> torch.Tensor | None:
        """The rotary angles at `positions` as complex numbers cos + i sin: (T,) positions
        shared by every row -> (T, head_dim/2); (B, T), each row its own -> (B, 1, T,
        head_dim/2), to broadcast over heads. None with learned positions."""
        if self.pos_embed is not None:
            return None
        # float32 even in a bf16 model: angles need the precision
        cos, sin = self.rope_cos[positions].float(), self.rope_sin[positions].float()
        if positions.dim() == 2:
            cos, sin = cos[:, None], sin[:, None]
        if torch.compiler.is_compiling():
            return torch.stack((cos, sin))  # the real pair; see apply_rotary
        return torch.complex(cos, sin)

    def reset_buffers(self) -> None:
        """Compute the buffers derived from the config (the rotary tables), on the CPU in
        float64 (which not every device has); on the meta device, only their shapes."""
        if self.config.position == "rope":
            device = self.embed.weight.device
            if device.type == "meta":
                shape = (self.config.context_window, self.config.head_dim // 2)
                self.rope_cos = torch.empty(shape, device=device)
                self.rope_sin = torch.empty(shape, device=device)
                return
            positions = torch.arange(self.config.context_window, device="cpu")
            cos, sin = rotary_tables(self.config.head_dim, positions, self.config.rope_base)
            self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, embeddings: bool = True) -> int:
        total = sum(p.numel() for p in self.parameters())
        if not embeddings:
            total -= self.embed.weight.numel()
            if self.pos_embed is not None:
                total -= self.pos_embed.weight.numel()
            if not self.config.tie_embeddings:
                total -= self.unembed.weight.numel()
        return total

    def training_flops_per_token(self) -> float:
        """Floating-point operations to train on one token (forward and backward): 6 per
        weight of every matrix multiply (2 forward, 4 backward), plus attention's scores
        and weighted sum, 12 x context x width per layer (counted unmasked, as is usual
        for MFU). Embedding lookups are free; a tied embedding counts as the unembedding."""
        c = self.config
        lookups = {id(self.pos_embed.weight)} if self.pos_embed is not None else set()
        if not c.tie_embeddings:
            lookups.add(id(self.embed.weight))
        matmul = sum(p.numel() for p in self.parameters() if p.dim() == 2 and id(p) not in lookups)
        return 6 * matmul + 12 * c.n_layer * c.context_window * c.n_embd

    def forward(
        self,
        ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | RowCache | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ids (B, T) -> logits (B, T, vocab), and the mean cross-entropy if targets given.

        With a cache, `ids` continue the cached sequence. `last_only` computes logits for
        the final position only (all that decoding needs; the unembedding is the largest
        matrix of a small model).
        """
        B, T = ids.shape
        # (T,): the same positions for every row; (B, T): each row at its own (a row cache)
        positions = cache.positions(T) if cache is not None else torch.arange(T, device=ids.device)
        end = cache.end(T) if cache is not None else T
        if end > self.config.context_window:
            raise ValueError(
                f"sequence of {end} tokens exceeds the context window "
                f"({self.config.context_window})"
            )
        x, rotary = self.embed_positions(ids, positions), self.rotation(positions)  # (B, T, C)
        for block in self.blocks:
            x = block(x, rotary, cache)
        if cache is not None:
            cache.advance(T)
        logits = self.logits(x[:, -1:, :] if last_only else x)  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def embed_positions(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """ids (B, T) at `positions` ((T,), or (B, T) for rows at their own) -> the residual
        stream's first vectors (B, T, C): each token's embedding, plus its position's with
        learned positions (rotary positions act inside attention)."""
        x = dropout(self.embed(ids), self.config.dropout, self.training)
        if self.pos_embed is not None:
            x = x + self.pos_embed(positions)
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Vectors of the residual stream (B, T, C) -> next-token logits (B, T, vocab):
        the final norm, then the unembedding."""
        logits = self.unembed(self.norm_out(x)).float()
        if self.config.logit_softcap is not None:  # smoothly bounded to (-cap, cap)
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits / cap)
        return logits
