"""Write a Hugging Face model directory from the bridge's ``(hf_name, tensor)`` stream.

The output (sharded safetensors + index, config.json, generation_config.json, tokenizer files) loads in
transformers and vLLM as it is.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Iterable, Optional

import torch

from tgpo_megatron.config.arch import ModelArch

_ARCHITECTURES = {
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "llama": "LlamaForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
    "align_report.json",  # the teacher-only ids an aligned student emits and how they decode (data/align.py)
)


def hf_config_dict(arch: ModelArch) -> dict:
    """config.json contents for ``arch`` in the layout hub checkpoints use (read by transformers 4 and 5)."""
    rope_scaling = None
    if arch.rope_scaling is not None:
        rope_scaling = {"rope_type": "llama3", **{k: v for k, v in vars(arch.rope_scaling).items()}}
    config = {
        "architectures": [_ARCHITECTURES[arch.family]],
        "model_type": arch.family,
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.hidden_size,
        "intermediate_size": arch.intermediate_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_attention_heads,
        "num_key_value_heads": arch.num_kv_heads,
        "head_dim": arch.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": arch.rms_norm_eps,
        "rope_theta": arch.rope_theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": arch.max_position_embeddings,
        "tie_word_embeddings": arch.tie_word_embeddings,
        "torch_dtype": arch.torch_dtype,
        "bos_token_id": arch.bos_token_id,
        "eos_token_id": arch.eos_token_id,
        "pad_token_id": arch.pad_token_id,
        "use_cache": True,
    }
    if arch.family in ("llama", "qwen3", "qwen3_moe"):
        config["attention_bias"] = False
    if arch.family in ("llama", "qwen3"):
        config["mlp_bias"] = False
    if arch.family in ("qwen2", "qwen3", "qwen3_moe"):
        config["use_sliding_window"] = False
    if arch.moe is not None:
        config.update(
            {
                "num_experts": arch.moe.num_experts,
                "num_experts_per_tok": arch.moe.experts_per_token,
                "moe_intermediate_size": arch.moe.expert_intermediate_size,
                "norm_topk_prob": arch.moe.norm_topk_prob,
                "router_aux_loss_coef": arch.moe.router_aux_loss_coef,
                "decoder_sparse_step": 1,
                "mlp_only_layers": [],
            }
        )
    return config


def write_hf_checkpoint(
    stream: Iterable[tuple[str, torch.Tensor]],
    out_dir: str,
    arch: ModelArch,
    *,
    tokenizer_dir: Optional[str] = None,
    max_shard_bytes: int = 4 * 1024**3,
    write: bool = True,
    progress: bool = False,
) -> None:
    """Consume ``stream`` (every rank must, it is collective) and, where ``write``, save it to ``out_dir``."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    if write:
        os.makedirs(out_dir, exist_ok=True)
    # Shards go to disk as soon as they are full, so host memory holds at most one shard.
    written: list[tuple[str, list[str]]] = []
    shard: dict[str, torch.Tensor] = {}
    shard_bytes = total = 0

    def flush():
        nonlocal shard, shard_bytes
        part = os.path.join(out_dir, f"part-{len(written):05d}.safetensors.tmp")
        save_file(shard, part, metadata={"format": "pt"})
        written.append((part, list(shard)))
        shard, shard_bytes = {}, 0

    for name, tensor in tqdm(stream, desc="export", unit="tensor", disable=not (progress and write)):
        if not write:
            continue
        nbytes = tensor.numel() * tensor.element_size()
        if shard and shard_bytes + nbytes > max_shard_bytes:
            flush()
        shard[name] = tensor.detach().to("cpu", copy=True)
        shard_bytes += nbytes
        total += nbytes
    if not write:
        return
    if shard:
        flush()
    if len(written) == 1:
        os.replace(written[0][0], os.path.join(out_dir, "model.safetensors"))
    else:
        weight_map = {}
        for i, (part, names) in enumerate(written):
            file = f"model-{i + 1:05d}-of-{len(written):05d}.safetensors"
            os.replace(part, os.path.join(out_dir, file))
            weight_map.update({name: file for name in names})
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config_dict(arch), f, indent=2)
    generation = {
        k: v
        for k, v in (
            ("bos_token_id", arch.bos_token_id),
            ("eos_token_id", arch.eos_token_id),
            ("pad_token_id", arch.pad_token_id),
        )
        if v is not None
    }
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=2)
    if tokenizer_dir:
        copy_tokenizer(tokenizer_dir, out_dir)


def copy_tokenizer(tokenizer_dir: str, out_dir: str) -> list[str]:
    """Copy the tokenizer files of ``tokenizer_dir`` that exist into ``out_dir``; returns their names."""
    names = [name for name in TOKENIZER_FILES if os.path.exists(os.path.join(tokenizer_dir, name))]
    for name in names:
        shutil.copy(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))
    return names
