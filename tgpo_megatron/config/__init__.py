"""The recipe and every check made from it before anything is built. Imports without torch: the launchers run
it on a login node (tests/unit/test_layers.py checks this)."""

from tgpo_megatron.config.loading import (
    apply_overrides,
    config_from_dict,
    from_dict,
    load_config,
    read_recipe,
    save_config,
)
from tgpo_megatron.config.sections import (
    DTYPES,
    LUFFY_SYSTEM_PROMPT,
    AlgorithmConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    EvalDataset,
    LaunchConfig,
    ModelConfig,
    RewardConfig,
    RolloutConfig,
    SFTConfig,
    TeacherConfig,
    TrainerConfig,
)

__all__ = [
    "DTYPES",
    "LUFFY_SYSTEM_PROMPT",
    "AlgorithmConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "EvalDataset",
    "LaunchConfig",
    "ModelConfig",
    "RewardConfig",
    "RolloutConfig",
    "SFTConfig",
    "TeacherConfig",
    "TrainerConfig",
    "apply_overrides",
    "config_from_dict",
    "from_dict",
    "load_config",
    "read_recipe",
    "save_config",
]
