"""A model as one GGUF file, for llama.cpp and what is built on it (ollama, LM Studio,
llama-cpp-python), written with llama.cpp's own writer (the `gguf` package).

The architecture is llama.cpp's `arcee` (RMSNorm, rotary positions, a non-gated
squared-ReLU MLP). llama.cpp's usual rotary mode turns neighbouring pairs of channels,
as textgen does, so the weights go in as they are, the fused query/key/value matrix
split in three. The classic recipe (learned positions, LayerNorm, GELU) is llama.cpp's
`gpt2`, with zero biases. Weights are float32, float16 or q8_0 (blocks of 32 values
with a float16 scale each); norm gains stay float32. The tokenizer goes in as GPT-2's
byte-level BPE (tokens, merges, the GPT-2 pre-tokenizer), with `<|endoftext|>` added
before each text, as textgen does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from textgen.errors import TextgenError, install_hint
from textgen.export.format import ARCEE, GPT2, Format, Target, tensor
from textgen.export.hf import LAYER_NORM_EPS, RMS_EPS

if TYPE_CHECKING:
    import torch

    from textgen.model.loaded import LoadedModel
    from textgen.model.transformer import Transformer
    from textgen.settings import ModelConfig
    from textgen.text.tokenizer import Tokenizer


def _writer_module():  # noqa: ANN202
    try:
        import gguf
    except ImportError:
        raise TextgenError(
            f"the gguf package writes GGUF files and is not installed: {install_hint('export')}"
        ) from None
    return gguf


Q8_0_BLOCK = 32  # values per block of a q8_0 row (llama.cpp's QK8_0); k-quants take 256


def check_dtype(config: ModelConfig, dtype: str) -> None:
    """q8_0 quantizes each matrix's rows in blocks of 32: every row length must be a
    multiple of 32 (the width, and the MLP's hidden width)."""
    if dtype != "q8_0":
        return
    rows = {"n_embd": config.n_embd, "the MLP's width": config.mlp_ratio * config.n_embd}
    odd = [f"{name} {n}" for name, n in rows.items() if n % Q8_0_BLOCK]
    if odd:
        raise TextgenError(
            f"--dtype q8_0 quantizes rows in blocks of {Q8_0_BLOCK} values, and this "
            f"model's {', '.join(odd)} is not a multiple of {Q8_0_BLOCK}; export it as "
            "float16 or float32"
        )


def write(lm: LoadedModel, path: Path, target: Target, dtype: str) -> None:
    gguf = _writer_module()
    model, config = lm.model, lm.model_config
    check_dtype(config, dtype)
    writer = gguf.GGUFWriter(str(path), arch=target.name)
    writer.add_name(lm.folder.name)
    writer.add_context_length(config.context_window)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.mlp_ratio * config.n_embd)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.n_head)
    if target is GPT2:
        writer.add_layer_norm_eps(LAYER_NORM_EPS)
        weights = _gpt2_weights(model)
    else:
        writer.add_rope_dimension_count(config.head_dim)
        writer.add_rope_freq_base(config.rope_base)
        writer.add_layer_norm_rms_eps(RMS_EPS)
        weights = _weights(model)
    writer.add_vocab_size(config.vocab_size)
    file_types = {"float32": "ALL_F32", "float16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}
    writer.add_file_type(getattr(gguf.LlamaFileType, file_types[dtype]))
    _add_tokenizer(writer, lm.tokenizer, gguf)
    for name, weight in weights.items():
        if weight.dim() == 1:  # norm gains and biases stay in float32, as llama.cpp keeps them
            writer.add_tensor(name, tensor(weight, "float32").numpy())
        elif dtype == "q8_0":  # blocks of 32 values, each with its own float16 scale
            kind = gguf.GGMLQuantizationType.Q8_0
            data = gguf.quants.quantize(tensor(weight, "float32").numpy(), kind)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=kind)
        else:
            writer.add_tensor(name, tensor(weight, dtype).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _weights(model: Transformer) -> dict[str, torch.Tensor]:
    """llama.cpp's tensor names for textgen's weights (as (out, in) matrices)."""
    c = model.config
    weights = {"token_embd.weight": model.embed.weight, "output_norm.weight": model.norm_out.weight}
    if not c.tie_embeddings:
        weights["output.weight"] = model.unembed.weight
    for i, block in enumerate(model.blocks):
        q, k, v = block.attn.qkv.weight.split(c.n_embd)
        weights |= {
            f"blk.{i}.attn_norm.weight": block.norm_attn.weight,
            f"blk.{i}.attn_q.weight": q,
            f"blk.{i}.attn_k.weight": k,
            f"blk.{i}.attn_v.weight": v,
            f"blk.{i}.attn_output.weight": block.attn.proj.weight,
            f"blk.{i}.ffn_norm.weight": block.norm_mlp.weight,
            f"blk.{i}.ffn_up.weight": block.mlp.up.weight,
            f"blk.{i}.ffn_down.weight": block.mlp.down.weight,
        }
    return weights


def _gpt2_weights(model: Transformer) -> dict[str, torch.Tensor]:
    """The classic recipe as llama.cpp's `gpt2` (learned positions, LayerNorm, GELU): its
    names for textgen's weights, and zeros for the biases GPT-2 has and textgen does not."""
    import torch

    c = model.config
    zeros = {"norm": torch.zeros(c.n_embd), "qkv": torch.zeros(3 * c.n_embd)}
    zeros["ffn"] = torch.zeros(c.mlp_ratio * c.n_embd)
    weights = {
        "token_embd.weight": model.embed.weight,
        "position_embd.weight": model.pos_embed.weight,
        "output_norm.weight": model.norm_out.weight,
        "output_norm.bias": zeros["norm"],
    }
    if not c.tie_embeddings:
        weights["output.weight"] = model.unembed.weight
    for i, block in enumerate(model.blocks):
        weights |= {
            f"blk.{i}.attn_norm.weight": block.norm_attn.weight,
            f"blk.{i}.attn_norm.bias": zeros["norm"],
            f"blk.{i}.attn_qkv.weight": block.attn.qkv.weight,  # q, k, v one after another
            f"blk.{i}.attn_qkv.bias": zeros["qkv"],
            f"blk.{i}.attn_output.weight": block.attn.proj.weight,
            f"blk.{i}.attn_output.bias": zeros["norm"],
            f"blk.{i}.ffn_norm.weight": block.norm_mlp.weight,
            f"blk.{i}.ffn_norm.bias": zeros["norm"],
            f"blk.{i}.ffn_up.weight": block.mlp.up.weight,
            f"blk.{i}.ffn_up.bias": zeros["ffn"],
            f"blk.{i}.ffn_down.weight": block.mlp.down.weight,
            f"blk.{i}.ffn_down.bias": zeros["norm"],
        }
    return weights


def _add_tokenizer(writer, tokenizer: Tokenizer, gguf) -> None:  # noqa: ANN001
    data = json.loads(tokenizer.to_json())
    vocab: dict[str, int] = {**data["model"]["vocab"]}
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [""] * tokenizer.vocab_size
    for token, token_id in vocab.items():
        tokens[token_id] = token
    types = [gguf.TokenType.NORMAL] * tokenizer.vocab_size
    types[tokenizer.eot_id] = gguf.TokenType.CONTROL
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the GPT-2 split textgen's byte-level BPE uses
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.eot_id)
    writer.add_eos_token_id(tokenizer.eot_id)
    writer.add_add_bos_token(True)  # `<|endoftext|>` starts a text
    writer.add_add_eos_token(False)


def is_export(path: Path) -> bool:
    """A GGUF file (by its magic number): what --overwrite may replace."""
    try:
        with open(path, "rb") as f:
            return path.is_file() and f.read(4) == b"GGUF"
    except OSError:
        return False


FORMAT = Format(
    name="gguf",
    title="GGUF",
    summary="one GGUF file, for llama.cpp and ollama",
    tool="llama.cpp",
    targets=(ARCEE, GPT2),
    dtypes=("float32", "float16", "q8_0"),
    write=write,
    loading="run it with llama.cpp: llama-completion -m {out} -p 'The' -n 40\n"
    "for ollama, a Modelfile: FROM {out} | TEMPLATE {{{{ .Prompt }}}} | PARAMETER num_ctx "
    "{context} | PARAMETER temperature 0.8 | PARAMETER top_k 0 | PARAMETER top_p 1 | "
    "PARAMETER repeat_penalty 1 (one a line; num_ctx is the model's context window)",
    suffix=".gguf",
    is_export=is_export,
)
