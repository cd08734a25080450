"""Every shipped recipe loads, and its layouts fit the GPUs it states and the models' real shapes."""
import glob
import os

import pytest

from tgpo_megatron.config import load_config
from tgpo_megatron.layouts import check_layouts
from tgpo_megatron.models.arch import arch_from_hf_config

RECIPES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "examples", "recipes", "*.yaml")))

QWEN2 = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu", rms_norm_eps=1e-6,
             tie_word_embeddings=False, rope_theta=10000.0, bos_token_id=151643, eos_token_id=151643)
LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", rms_norm_eps=1e-5,
             tie_word_embeddings=False, rope_theta=500000.0, bos_token_id=128000, eos_token_id=128001,
             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192})
# The published config.json shapes of the recipes' models (after tools/align_tokenizer.py, and for the
# Qwen2.5-Math students the 16k-context edit the paper and LUFFY make).
CONFIGS = {
    "Qwen2.5-Math-7B-aligned": dict(QWEN2, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                    num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                    max_position_embeddings=16384, rope_theta=40000.0),
    "Qwen2.5-Math-1.5B-aligned": dict(QWEN2, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                      num_attention_heads=12, num_key_value_heads=2, vocab_size=152064,
                                      max_position_embeddings=16384, rope_theta=40000.0, tie_word_embeddings=True),
    "DeepSeek-R1-Distill-Qwen-7B-aligned": dict(QWEN2, hidden_size=3584, intermediate_size=18944,
                                                num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                                                vocab_size=152064, max_position_embeddings=131072),
    "DeepSeek-R1-Distill-Qwen-32B-aligned": dict(QWEN2, hidden_size=5120, intermediate_size=27648,
                                                 num_hidden_layers=64, num_attention_heads=40, num_key_value_heads=8,
                                                 vocab_size=152064, max_position_embeddings=131072,
                                                 rope_theta=1000000.0),
    "Llama-3.1-70B-aligned": dict(LLAMA, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                                  num_attention_heads=64, num_key_value_heads=8, vocab_size=128256,
                                  max_position_embeddings=131072),
    "DeepSeek-R1-Distill-Llama-70B-aligned": dict(LLAMA, hidden_size=8192, intermediate_size=28672,
                                                  num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                                                  vocab_size=128256, max_position_embeddings=131072),
}
TINY = dict(QWEN2, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=107, max_position_embeddings=512)


def arch_of(path):
    name = os.path.basename(path.rstrip("/"))
    return arch_from_hf_config(CONFIGS.get(name, TINY if path.startswith("runs/demo") else None))


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_recipe_loads_and_its_layouts_fit(recipe):
    config = load_config(recipe)
    check_layouts(config, config.launch.world_size, arch_of)


def test_a_layout_that_does_not_fit_the_stated_gpus_is_refused():
    recipe = [r for r in RECIPES if r.endswith("llama3.1_70b_tgpo.yaml")][0]
    with pytest.raises(Exception, match=r"teacher layout \(teacher.tp=16, teacher.pp=1\): tp=16 does not divide "
                                        r"num_key_value_heads=8"):
        check_layouts(load_config(recipe, ["teacher.tp=16"]), 64, arch_of)
