"""The published config.json shapes of the shipped recipes' models, for tests that check layouts and memory
at real sizes without the weights (after tools/align_tokenizer.py, and for the Qwen2.5-Math students the 16k
context edit the paper and LUFFY make)."""
import json
import os

QWEN2 = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu", rms_norm_eps=1e-6,
             tie_word_embeddings=False, rope_theta=10000.0, bos_token_id=151643, eos_token_id=151643)
LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", rms_norm_eps=1e-5,
             tie_word_embeddings=False, rope_theta=500000.0, bos_token_id=128000, eos_token_id=128001,
             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192})
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


def write_config_dirs(root) -> dict[str, str]:
    """A directory with a config.json for each model of ``CONFIGS``; returns name -> directory."""
    dirs = {}
    for name, config in CONFIGS.items():
        path = os.path.join(str(root), name)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(config, f)
        dirs[name] = path
    return dirs
