"""Vocabulary padding and masking, layout validation, Llama-3 RoPE frequencies."""

import pytest
import torch

from tests.unit.test_arch import LLAMA31_8B, QWEN25_15B
from tgpo_megatron.config.arch import RopeScaling, arch_from_hf_config
from tgpo_megatron.config.layouts import Layout, LayoutError
from tgpo_megatron.models.builder import llama3_inv_freq, mask_padded_logits


@pytest.mark.parametrize(
    "vocab, tp, expected",
    [
        (151936, 1, 151936),
        (151936, 2, 152064),
        (151665, 4, 152064),
        (251, 2, 256),
        (251, 4, 512),
        (128256, 8, 129024),
    ],
)
def test_padded_vocab(vocab, tp, expected):
    """One owner (ModelArch.padded_vocab) for the model the builder makes and the memory the plan counts."""
    padded = arch_from_hf_config({**QWEN25_15B, "vocab_size": vocab}).padded_vocab(tp)
    assert padded == expected and padded % (tp * 128) == 0 and padded >= vocab


def test_padded_logits_never_count():
    vocab, tp = 251, 2
    shard = arch_from_hf_config({**QWEN25_15B, "vocab_size": vocab}).padded_vocab(tp) // tp  # rank 1: 123 real
    logits = [torch.randn(3, 5, shard) * 4 for _ in range(tp)]
    masked = [mask_padded_logits(x, vocab, rank) for rank, x in enumerate(logits)]
    assert torch.equal(masked[0], logits[0])  # rank 0 has no padding
    full = torch.cat(masked, dim=-1)
    probs = torch.softmax(full, dim=-1)
    assert torch.all(probs[..., vocab:] == 0)
    assert torch.allclose(probs[..., :vocab], torch.softmax(torch.cat(logits, -1)[..., :vocab], -1))
    assert int(full.argmax(-1).max()) < vocab
    assert int(torch.multinomial(probs.reshape(-1, full.shape[-1]), 1000, replacement=True).max()) < vocab
    entropy = -(probs * torch.log_softmax(full, -1)).sum(-1)
    assert torch.isfinite(entropy).all()


def test_layout_validation_names_the_problem():
    arch = arch_from_hf_config(QWEN25_15B)  # 12 heads, 2 KV heads, 28 layers
    Layout(2, 2).validate_for(arch, world_size=8)
    with pytest.raises(LayoutError, match="tp=4 does not divide num_key_value_heads=2"):
        Layout(4, 1).validate_for(arch)
    with pytest.raises(LayoutError, match="tp=8 does not divide num_attention_heads=12"):
        Layout(8, 1).validate_for(arch)
    with pytest.raises(LayoutError, match="pp=3 does not divide num_hidden_layers=28"):
        Layout(1, 3).validate_for(arch)
    with pytest.raises(LayoutError, match="world size 6 is not a multiple of tp\\*pp=4"):
        Layout(2, 2).validate_for(arch, world_size=6)
    with pytest.raises(LayoutError):
        Layout(0, 1)
    with pytest.raises(LayoutError, match="ep=2 needs a mixture-of-experts model"):
        Layout(1, 1, 2).validate_for(arch)


def test_expert_parallel_layout_of_the_papers_teacher():
    from tests.model_shapes import CONFIGS

    arch = arch_from_hf_config(CONFIGS["Qwen3-30B-A3B-Thinking-2507-aligned"])  # 128 experts, 32/4 heads
    Layout(1, 1, 8).validate_for(arch, world_size=8)
    Layout(2, 1, 8).validate_for(arch, world_size=8)  # experts over TP x DP ranks, as Megatron lays them
    Layout(4, 2, 4).validate_for(arch, world_size=8)
    with pytest.raises(LayoutError, match="ep=3 does not divide num_experts=128"):
        Layout(1, 1, 3).validate_for(arch)
    with pytest.raises(LayoutError, match="world size 8 is not a multiple of ep\\*pp=16"):
        Layout(1, 2, 8).validate_for(arch, world_size=8)


@pytest.mark.parametrize(
    "scaling",
    [
        RopeScaling(8.0, 1.0, 4.0, 8192),  # Llama 3.1
        RopeScaling(32.0, 1.0, 4.0, 8192),  # Llama 3.2
        RopeScaling(4.0, 2.0, 8.0, 64),
    ],
)
def test_llama3_inv_freq_matches_transformers(scaling):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = LlamaConfig(
        **{k: v for k, v in LLAMA31_8B.items() if k not in ("architectures", "rope_scaling")},
        rope_scaling={"rope_type": "llama3", **vars(scaling)},
    )
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    ours = llama3_inv_freq(128, 500000.0, scaling)
    torch.testing.assert_close(ours, expected.float(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("apex_wgrad", [True, False])
def test_transformer_engine_turns_its_fusions_on_and_the_local_spec_keeps_them_off(monkeypatch, apex_wgrad):
    """Megatron's unfused RoPE on packed sequences syncs with the host twice per layer; TE's fused kernels do
    not. Megatron's own output layer needs apex's wgrad kernel for gradient-accumulation fusion, so that one is
    on only where apex provides it (TE itself need not be installed to build the arguments)."""
    import importlib.util

    from tests.model_shapes import CONFIGS
    from tgpo_megatron.models.builder import transformer_config_kwargs

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            (find_spec("json") if apex_wgrad else None)
            if name == "fused_weight_gradient_mlp_cuda"
            else find_spec(name, *a)
        ),
    )
    moe = arch_from_hf_config(CONFIGS["Qwen3-30B-A3B-Thinking-2507-aligned"])
    te = transformer_config_kwargs(moe, Layout(1, 1, 8), torch.bfloat16, transformer_impl="transformer_engine")
    assert te["apply_rope_fusion"] and te["moe_permute_fusion"] and te["moe_grouped_gemm"]
    assert te["gradient_accumulation_fusion"] is apex_wgrad
    local = transformer_config_kwargs(moe, Layout(1, 1, 8), torch.bfloat16, transformer_impl="local")
    assert not (local["apply_rope_fusion"] or local["moe_permute_fusion"] or local["gradient_accumulation_fusion"])
    dense = transformer_config_kwargs(
        arch_from_hf_config(QWEN25_15B), Layout(2, 1), transformer_impl="transformer_engine"
    )
    assert dense["apply_rope_fusion"] and "moe_permute_fusion" not in dense
