"""The config.json shapes of the shipped recipes' models (examples/model_configs), for tests that check
layouts and memory at real sizes without the weights, and a tiny one for the recipes of the CPU demo."""

import json
import os

MODEL_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "examples", "model_configs")


def _read(name: str) -> dict:
    with open(os.path.join(MODEL_CONFIGS, name, "config.json")) as f:
        return json.load(f)


CONFIGS = {
    name: _read(name)
    for name in sorted(os.listdir(MODEL_CONFIGS))
    if os.path.isfile(os.path.join(MODEL_CONFIGS, name, "config.json"))
}
QWEN2 = {
    k: CONFIGS["DeepSeek-R1-Distill-Qwen-7B-aligned"][k]
    for k in ("architectures", "model_type", "hidden_act", "rms_norm_eps", "tie_word_embeddings")
}
TINY = dict(
    QWEN2,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=107,
    max_position_embeddings=512,
    rope_theta=10000.0,
)


def write_config_dirs(root) -> dict[str, str]:
    """A directory with a config.json for each model of ``CONFIGS`` and for ``tiny``; returns name -> directory."""
    dirs = {}
    for name, config in {**CONFIGS, "tiny": TINY}.items():
        path = os.path.join(str(root), name)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(config, f)
        dirs[name] = path
    return dirs
