"""Model architecture read from a Hugging Face ``config.json``: the one description every other module uses.

Supported families are the decoder models TGPO is run with: Qwen2/Qwen2.5 (QKV bias), Qwen3 (QK-norm,
explicit head_dim), Llama 3/3.1 (llama3 RoPE scaling) and Qwen3-MoE (Qwen3 attention, a routed mixture of
experts in every layer; the paper's teacher). Anything else is refused with an error that names the field,
rather than built into a model that silently differs from the checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Optional

from tgpo_megatron.errors import UserError

_FAMILY_BY_ARCHITECTURE = {
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "LlamaForCausalLM": "llama",
    "Qwen3MoeForCausalLM": "qwen3_moe",
}
SUPPORTED_FAMILIES = ("qwen2", "qwen3", "llama", "qwen3_moe")


class UnsupportedModelError(UserError, ValueError):
    """The config.json describes a model this package cannot build exactly."""


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency scaling (the only scaled RoPE the supported families use)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class MoeArch:
    """A routed mixture of experts in every layer, routed as transformers' Qwen3-MoE block does: softmax over
    all experts, the top ``experts_per_token``, renormalised over them when ``norm_topk_prob``; no shared
    expert, no capacity limit (no token is dropped)."""

    num_experts: int
    experts_per_token: int
    expert_intermediate_size: int
    norm_topk_prob: bool
    router_aux_loss_coef: float


VOCAB_DIVISIBLE_BY = 128
"""Each TP rank's share of the (padded) vocabulary is a multiple of this."""


@dataclass(frozen=True)
class ModelArch:
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    qk_norm: bool
    rope_scaling: Optional[RopeScaling] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[Any] = None
    pad_token_id: Optional[int] = None
    torch_dtype: str = "float32"
    moe: Optional[MoeArch] = None

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_kv_heads

    def padded_vocab(self, tp: int) -> int:
        """The vocabulary as the model holds it at tensor parallelism ``tp``: rounded up to a multiple of
        ``tp x VOCAB_DIVISIBLE_BY`` (Megatron-Core does not pad; the padded logits are masked everywhere)."""
        multiple = tp * VOCAB_DIVISIBLE_BY
        return -(-self.vocab_size // multiple) * multiple

    def to_dict(self) -> dict:
        return asdict(self)


def load_arch(path: str) -> ModelArch:
    """Read ``config.json`` from a model directory (or the file itself)."""
    config_path = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path}: no config.json here; expected a Hugging Face model directory")
    with open(config_path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise UnsupportedModelError(f"{config_path}: not valid JSON ({e})") from None
    try:
        return arch_from_hf_config(config)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(f"{config_path}: {e}") from None


def _family(config: dict) -> str:
    architectures = config.get("architectures") or []
    for name in architectures:
        if name in _FAMILY_BY_ARCHITECTURE:
            return _FAMILY_BY_ARCHITECTURE[name]
    model_type = config.get("model_type")
    if not architectures and model_type in SUPPORTED_FAMILIES:
        return model_type
    found = architectures or model_type
    raise UnsupportedModelError(f"unsupported architecture {found!r}; supported: {sorted(_FAMILY_BY_ARCHITECTURE)}")


def _rope(config: dict) -> tuple[float, Optional[RopeScaling]]:
    # transformers 5 writes `rope_parameters`; checkpoints on the hub still carry rope_theta + rope_scaling.
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return float(theta), None
    if rope_type != "llama3":
        raise UnsupportedModelError(f"rope type {rope_type!r} is not supported (default and llama3 are)")
    return float(theta), RopeScaling(
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position_embeddings=int(params["original_max_position_embeddings"]),
    )


def arch_from_hf_config(config: dict) -> ModelArch:
    family = _family(config)
    if config.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"hidden_act={config['hidden_act']!r}; only silu is supported")
    if config.get("use_sliding_window"):
        raise UnsupportedModelError("use_sliding_window=true is not supported")
    if config.get("mlp_bias"):
        raise UnsupportedModelError("mlp_bias=true is not supported")
    if family in ("llama", "qwen3", "qwen3_moe") and config.get("attention_bias"):
        raise UnsupportedModelError("attention_bias=true (bias on o_proj) is not supported")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        if key not in config:
            raise UnsupportedModelError(f"missing required field {key!r}")
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = config.get("head_dim") or hidden // heads
    kv_heads = int(config.get("num_key_value_heads") or heads)
    if heads % kv_heads:
        raise UnsupportedModelError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    rope_theta, rope_scaling = _rope(config)
    moe = _moe(config) if family == "qwen3_moe" else None
    return ModelArch(
        family=family,
        vocab_size=int(config["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(config["intermediate_size"]),
        num_layers=int(config["num_hidden_layers"]),
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=int(head_dim),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=rope_theta,
        max_position_embeddings=int(config.get("max_position_embeddings", 4096)),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=family == "qwen2",
        qk_norm=family in ("qwen3", "qwen3_moe"),
        rope_scaling=rope_scaling,
        bos_token_id=config.get("bos_token_id"),
        eos_token_id=config.get("eos_token_id"),
        pad_token_id=config.get("pad_token_id"),
        torch_dtype=str(config.get("torch_dtype") or config.get("dtype") or "float32"),
        moe=moe,
    )


def _moe(config: dict) -> MoeArch:
    if config.get("decoder_sparse_step", 1) != 1:
        raise UnsupportedModelError(
            f"decoder_sparse_step={config['decoder_sparse_step']} is not supported "
            "(every layer must be a mixture of experts)"
        )
    if config.get("mlp_only_layers"):
        raise UnsupportedModelError(
            f"mlp_only_layers={config['mlp_only_layers']} is not supported (dense layers between expert layers)"
        )
    if config.get("shared_expert_intermediate_size"):
        raise UnsupportedModelError("shared_expert_intermediate_size is set: shared experts are not supported")
    # published checkpoints write num_experts, transformers 5 writes num_local_experts
    experts = config.get("num_experts", config.get("num_local_experts"))
    for key, value in (
        ("num_experts", experts),
        ("num_experts_per_tok", config.get("num_experts_per_tok")),
        ("moe_intermediate_size", config.get("moe_intermediate_size")),
    ):
        if value is None:
            raise UnsupportedModelError(f"missing required field {key!r}")
    top_k = int(config["num_experts_per_tok"])
    if not 1 <= top_k <= int(experts):
        raise UnsupportedModelError(f"num_experts_per_tok={top_k} must be between 1 and num_experts={experts}")
    return MoeArch(
        num_experts=int(experts),
        experts_per_token=top_k,
        expert_intermediate_size=int(config["moe_intermediate_size"]),
        norm_topk_prob=bool(config.get("norm_topk_prob", False)),
        router_aux_loss_coef=float(config.get("router_aux_loss_coef", 0.001)),
    )
