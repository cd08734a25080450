"""tgpo_megatron: Teacher-Guided Policy Optimization for on-policy LLM distillation on Megatron-Core."""

__version__ = "0.1.0"
