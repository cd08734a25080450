"""Reading HF config.json into a ModelArch, and refusing what we cannot build exactly."""

import json

import pytest

from tgpo_megatron.config.arch import UnsupportedModelError, arch_from_hf_config, load_arch

QWEN25_15B = {  # the shape of Qwen2.5-Math-1.5B's config.json (transformers 4 layout)
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "use_sliding_window": False,
    "torch_dtype": "bfloat16",
    "bos_token_id": 151643,
    "eos_token_id": 151643,
}
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "max_position_embeddings": 131072,
    "hidden_act": "silu",
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
}
QWEN3_8B_V5 = {  # transformers 5 writes rope_parameters
    "architectures": ["Qwen3ForCausalLM"],
    "model_type": "qwen3",
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 40960,
    "hidden_act": "silu",
    "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
    "attention_bias": False,
}


def test_qwen2():
    arch = arch_from_hf_config(QWEN25_15B)
    assert (arch.family, arch.qkv_bias, arch.qk_norm, arch.tie_word_embeddings) == ("qwen2", True, False, True)
    assert arch.head_dim == 128 and arch.heads_per_group == 6 and arch.rope_scaling is None


def test_llama31_rope_scaling():
    arch = arch_from_hf_config(LLAMA31_8B)
    assert arch.family == "llama" and not arch.qkv_bias and arch.rope_theta == 500000.0
    assert arch.rope_scaling.factor == 8.0 and arch.rope_scaling.original_max_position_embeddings == 8192


def test_qwen3_rope_parameters_and_explicit_head_dim():
    arch = arch_from_hf_config(QWEN3_8B_V5)
    assert arch.qk_norm and not arch.qkv_bias and arch.head_dim == 128 and arch.rope_theta == 1e6


@pytest.mark.parametrize(
    "change, message",
    [
        ({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral"}, "unsupported architecture"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"use_sliding_window": True}, "use_sliding_window"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn'"),
        ({"num_key_value_heads": 5}, "num_key_value_heads=5"),
    ],
)
def test_refuses_what_it_cannot_build(change, message):
    with pytest.raises(UnsupportedModelError, match=message):
        arch_from_hf_config({**QWEN25_15B, **change})


def test_missing_field_is_named():
    config = dict(QWEN25_15B)
    del config["intermediate_size"]
    with pytest.raises(UnsupportedModelError, match="intermediate_size"):
        arch_from_hf_config(config)


def test_load_arch_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_arch(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UnsupportedModelError, match="config.json: not valid JSON"):
        load_arch(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**QWEN25_15B, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UnsupportedModelError, match=r"config.json: unsupported architecture \['GPT2LMHeadModel'\]"):
        load_arch(str(tmp_path))


def test_qwen3_moe_the_papers_teacher():
    from tests.model_shapes import CONFIGS

    arch = arch_from_hf_config(CONFIGS["Qwen3-30B-A3B-Thinking-2507-aligned"])
    assert (arch.family, arch.qk_norm, arch.qkv_bias, arch.head_dim) == ("qwen3_moe", True, False, 128)
    moe = arch.moe
    assert (moe.num_experts, moe.experts_per_token, moe.expert_intermediate_size) == (128, 8, 768)
    assert moe.norm_topk_prob and moe.router_aux_loss_coef == 0.001


def test_transformers_5_spelling_of_the_expert_count():
    from tests.model_shapes import CONFIGS

    config = dict(CONFIGS["Qwen3-30B-A3B-Thinking-2507-aligned"])
    config["num_local_experts"] = config.pop("num_experts")
    assert arch_from_hf_config(config).moe.num_experts == 128


@pytest.mark.parametrize(
    "change, message",
    [
        ({"decoder_sparse_step": 2}, "decoder_sparse_step=2"),
        ({"mlp_only_layers": [0, 3]}, r"mlp_only_layers=\[0, 3\]"),
        ({"shared_expert_intermediate_size": 512}, "shared experts are not supported"),
        ({"num_experts_per_tok": 200}, "num_experts_per_tok=200 must be between 1 and num_experts=128"),
        ({"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe"}, "unsupported architecture"),
    ],
)
def test_refuses_mixtures_it_cannot_build(change, message):
    from tests.model_shapes import CONFIGS

    with pytest.raises(UnsupportedModelError, match=message):
        arch_from_hf_config({**CONFIGS["Qwen3-30B-A3B-Thinking-2507-aligned"], **change})


def test_missing_expert_field_is_named():
    from tests.model_shapes import CONFIGS

    config = dict(CONFIGS["Qwen3-30B-A3B-Thinking-2507-aligned"])
    del config["moe_intermediate_size"]
    with pytest.raises(UnsupportedModelError, match="missing required field 'moe_intermediate_size'"):
        arch_from_hf_config(config)
