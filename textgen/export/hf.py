"""A model as a Hugging Face transformers folder: `AutoModelForCausalLM.from_pretrained`
and `AutoTokenizer.from_pretrained` load it with no custom code.

- textgen's default model is transformers' Arcee (RMSNorm, rotary positions, a
  non-gated squared-ReLU MLP, no biases): the fused query/key/value matrix is split, and
  the query and key rows are reordered within each head, because transformers rotates the
  two halves of a head (rotate-half) where textgen rotates neighbouring pairs;
- the classic recipe (learned positions, LayerNorm, GELU) is GPT-2, with zero biases and
  its matrices transposed (GPT-2 keeps them as `Conv1D`).

The tokenizer adds `<|endoftext|>` before each text, as textgen does, and reads a typed
"<|endoftext|>" as text. It pads batches with `<|endoftext|>` on the left (the mask it
returns marks the padding alone); the model's configs name no pad token, or
transformers' `generate`, given ids without a mask, would mask out every
`<|endoftext|>` as padding, the one that starts each text included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textgen.export.format import ARCEE, GPT2, Format, Target, tensor
from textgen.files import atomic_write, write_json, write_text

if TYPE_CHECKING:
    import torch

    from textgen.model.loaded import LoadedModel
    from textgen.model.transformer import Transformer
    from textgen.text.tokenizer import Tokenizer

# nn.RMSNorm without an eps uses the float32 machine epsilon, 2**-23
RMS_EPS = 2.0**-23
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default
# config.json's mark of a folder an export wrote (the model it came from): --overwrite
# replaces such a folder, holding these files alone, and nothing else
MARK = "textgen_export"
# The files an export folder holds
FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
)


def write(lm: LoadedModel, folder: Path, target: Target, dtype: str) -> None:
    from safetensors.torch import save_file

    model, tokenizer = lm.model, lm.tokenizer
    if target is GPT2:
        weights, config = _gpt2_weights(model), _gpt2_config(model, tokenizer.eot_id)
    else:
        weights, config = _arcee_weights(model), _arcee_config(model, tokenizer.eot_id)
    state = {name: tensor(weight, dtype) for name, weight in weights.items()}
    # written as every other file is (safetensors alone would make it private to its owner)
    atomic_write(
        folder / "model.safetensors", lambda tmp: save_file(state, str(tmp), {"format": "pt"})
    )
    mark = {MARK: {"model": lm.folder.name}}
    write_json(folder / "config.json", {**config, "torch_dtype": dtype, **mark})
    write_json(folder / "generation_config.json", _generation_config(tokenizer.eot_id))
    _write_tokenizer(folder, tokenizer, model.config.context_window)


def rotate_half_order(head_dim: int) -> list[int]:
    """The rows of one head's query or key matrix in rotate-half order: new row
    c·D/2 + j is old row 2j + c (textgen pairs channels (2j, 2j+1); transformers pairs
    (j, j + D/2))."""
    return [2 * j + c for c in (0, 1) for j in range(head_dim // 2)]


def _arcee_weights(model: Transformer) -> dict[str, torch.Tensor]:
    import torch

    c = model.config
    order = torch.tensor(rotate_half_order(c.head_dim))
    rows = torch.cat([order + h * c.head_dim for h in range(c.n_head)])
    weights = {
        "model.embed_tokens.weight": model.embed.weight,
        "model.norm.weight": model.norm_out.weight,
    }
    for i, block in enumerate(model.blocks):
        q, k, v = block.attn.qkv.weight.split(c.n_embd)
        prefix = f"model.layers.{i}"
        weights |= {
            f"{prefix}.input_layernorm.weight": block.norm_attn.weight,
            f"{prefix}.self_attn.q_proj.weight": q[rows],
            f"{prefix}.self_attn.k_proj.weight": k[rows],
            f"{prefix}.self_attn.v_proj.weight": v,
            f"{prefix}.self_attn.o_proj.weight": block.attn.proj.weight,
            f"{prefix}.post_attention_layernorm.weight": block.norm_mlp.weight,
            f"{prefix}.mlp.up_proj.weight": block.mlp.up.weight,
            f"{prefix}.mlp.down_proj.weight": block.mlp.down.weight,
        }
    if not c.tie_embeddings:
        weights["lm_head.weight"] = model.unembed.weight
    return weights


def _arcee_config(model: Transformer, eot: int) -> dict[str, Any]:
    c = model.config
    return {
        "architectures": ["ArceeForCausalLM"],
        "model_type": "arcee",
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "intermediate_size": c.mlp_ratio * c.n_embd,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_head,
        "head_dim": c.head_dim,
        "hidden_act": "relu2",
        "max_position_embeddings": c.context_window,
        "rms_norm_eps": RMS_EPS,
        "tie_word_embeddings": c.tie_embeddings,
        "rope_theta": c.rope_base,  # transformers 4
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_base},  # 5
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
    }


def _gpt2_weights(model: Transformer) -> dict[str, torch.Tensor]:
    import torch

    def zeros(n: int) -> torch.Tensor:
        return torch.zeros(n)

    c = model.config
    weights = {
        "transformer.wte.weight": model.embed.weight,
        "transformer.wpe.weight": model.pos_embed.weight,
        "transformer.ln_f.weight": model.norm_out.weight,
        "transformer.ln_f.bias": zeros(c.n_embd),
    }
    for i, block in enumerate(model.blocks):  # GPT-2's Conv1D holds (in, out): transposed
        prefix = f"transformer.h.{i}"
        hidden = block.mlp.up.weight.shape[0]
        weights |= {
            f"{prefix}.ln_1.weight": block.norm_attn.weight,
            f"{prefix}.ln_1.bias": zeros(c.n_embd),
            f"{prefix}.attn.c_attn.weight": block.attn.qkv.weight.T,
            f"{prefix}.attn.c_attn.bias": zeros(3 * c.n_embd),
            f"{prefix}.attn.c_proj.weight": block.attn.proj.weight.T,
            f"{prefix}.attn.c_proj.bias": zeros(c.n_embd),
            f"{prefix}.ln_2.weight": block.norm_mlp.weight,
            f"{prefix}.ln_2.bias": zeros(c.n_embd),
            f"{prefix}.mlp.c_fc.weight": block.mlp.up.weight.T,
            f"{prefix}.mlp.c_fc.bias": zeros(hidden),
            f"{prefix}.mlp.c_proj.weight": block.mlp.down.weight.T,
            f"{prefix}.mlp.c_proj.bias": zeros(c.n_embd),
        }
    if not c.tie_embeddings:
        weights["lm_head.weight"] = model.unembed.weight
    return weights


def _gpt2_config(model: Transformer, eot: int) -> dict[str, Any]:
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.context_window,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": c.mlp_ratio * c.n_embd,
        "activation_function": "gelu_new",  # GELU's tanh approximation, as textgen's
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": True,
        "tie_word_embeddings": c.tie_embeddings,
        "use_cache": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
    }


def _generation_config(eot: int) -> dict[str, Any]:
    """textgen's own sampling defaults: temperature 0.8, no filters."""
    return {
        "bos_token_id": eot,
        "eos_token_id": eot,
        "do_sample": True,
        "temperature": 0.8,
        "top_k": 0,
        "top_p": 1.0,
    }


def _write_tokenizer(folder: Path, tokenizer: Tokenizer, context: int) -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import processors

    from textgen.text.tokenizer import END_OF_TEXT

    hf = HFTokenizer.from_str(tokenizer.to_json())
    hf.post_processor = processors.TemplateProcessing(  # the end-of-text marker first
        single=f"{END_OF_TEXT} $A",
        pair=f"{END_OF_TEXT} $A {END_OF_TEXT} $B",
        special_tokens=[(END_OF_TEXT, tokenizer.eot_id)],
    )
    write_text(folder / "tokenizer.json", hf.to_str())
    special = {"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT}
    special["pad_token"] = END_OF_TEXT
    write_json(folder / "special_tokens_map.json", special)
    write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **special,
            "model_max_length": context,
            # batches pad with the end-of-text marker on the left, so that every row's
            # text ends where generation goes on; a text cut to the window keeps its end,
            # as textgen does. Only the tokenizer pads: a pad_token_id in the model's
            # configs would make `generate` mask every end-of-text marker it is given
            # without an attention mask, the one that starts each text among them
            "pad_token": END_OF_TEXT,
            "padding_side": "left",
            "truncation_side": "left",
            "split_special_tokens": True,  # a typed "<|endoftext|>" is text, as in textgen
            "clean_up_tokenization_spaces": False,
        },
    )


def read_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def is_export(folder: Path) -> bool:
    """A folder an export wrote: its files alone, and config.json marked."""
    try:
        if not folder.is_dir() or any(p.name not in FILES for p in folder.iterdir()):
            return False
        config = read_config(folder)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(config, dict) and isinstance(config.get(MARK), dict)


FORMAT = Format(
    name="hf",
    title="Hugging Face",
    summary="a Hugging Face transformers folder",
    tool="transformers",
    targets=(ARCEE, GPT2),
    dtypes=("float32", "float16", "bfloat16"),
    write=write,
    loading="load it with transformers: AutoModelForCausalLM.from_pretrained({out!r}) and "
    "AutoTokenizer.from_pretrained({out!r})",
    is_export=is_export,
)
