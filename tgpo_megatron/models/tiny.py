"""Tiny random Hugging Face checkpoints of the supported families, for tests and the CPU demo.

Nothing is downloaded: the configs are written here and the weights drawn from a seeded generator, with
norms and biases away from their initial values so that a wrong mapping cannot hide behind ones and zeros.
"""

from __future__ import annotations

from typing import Optional

import torch

TINY_DEFAULTS = dict(
    vocab_size=250,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
)

# 8 experts of a quarter of the dense width, 2 per token: enough experts that routing differences show
TINY_MOE_DEFAULTS = dict(
    head_dim=48, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=64, norm_topk_prob=True
)


def tiny_hf_config(family: str, **overrides):
    """A transformers config object for a tiny model of ``family`` (qwen2, qwen3, llama, qwen3_moe)."""
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config, Qwen3MoeConfig

    kwargs = {**TINY_DEFAULTS, **overrides}
    if family == "qwen2":
        return Qwen2Config(**kwargs)
    if family == "qwen3":
        kwargs.setdefault("head_dim", 48)
        return Qwen3Config(**kwargs)
    if family == "llama":
        kwargs.setdefault("rope_theta", 500000.0)
        return LlamaConfig(**kwargs)
    if family == "qwen3_moe":
        for key, value in TINY_MOE_DEFAULTS.items():
            kwargs.setdefault(key, value)
        return Qwen3MoeConfig(**kwargs)
    raise ValueError(f"unknown family {family!r}")


@torch.no_grad()
def randomize_weights(model: torch.nn.Module, seed: int = 0, std: float = 0.08) -> None:
    generator = torch.Generator().manual_seed(seed)
    for name, param in sorted(model.named_parameters()):
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
        if "norm" in name:
            param.copy_(1.0 + 0.1 * noise)
        elif name.endswith("bias"):
            param.copy_(0.1 * noise)
        else:
            param.copy_(std * noise)


def save_tiny_hf_model(
    out_dir: str, family: str, seed: int = 0, dtype: Optional[torch.dtype] = None, **overrides
) -> str:
    """Write a random tiny model of ``family`` to ``out_dir`` as safetensors + config.json; returns out_dir."""
    from transformers import AutoModelForCausalLM

    config = tiny_hf_config(family, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    randomize_weights(model, seed)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def save_char_model(out_dir: str, family: str = "qwen2", seed: int = 0, **overrides) -> str:
    """A random tiny model that speaks the synthetic task's character tokenizer (EOS id 1, PAD id 0, no BOS),
    model and tokenizer in one HF directory; returns out_dir."""
    from tgpo_megatron.data.tokenizer import build_char_tokenizer, char_vocabulary

    special = dict(vocab_size=len(char_vocabulary()), eos_token_id=1, pad_token_id=0, bos_token_id=None)
    save_tiny_hf_model(out_dir, family, seed=seed, **special, **overrides)
    return build_char_tokenizer(out_dir)


def main(argv=None) -> int:
    """``tgpo tiny-model``."""
    from tgpo_megatron.cli import command_parser

    p = command_parser("tgpo tiny-model", "Write a tiny random HF model (config.json and safetensors).")
    p.add_argument("--family", required=True, choices=["qwen2", "qwen3", "llama", "qwen3_moe"])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=251)
    p.add_argument("--tie-word-embeddings", action="store_true")
    args = p.parse_args(argv)
    save_tiny_hf_model(
        args.out, args.family, seed=args.seed, vocab_size=args.vocab_size, tie_word_embeddings=args.tie_word_embeddings
    )
    print(args.out)
    return 0
