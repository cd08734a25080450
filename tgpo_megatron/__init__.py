"""tgpo_megatron: Teacher-Guided Policy Optimization for on-policy LLM distillation on Megatron-Core."""
import warnings

__version__ = "0.1.0"

# Megatron-Core warns on import about optional kernels (Apex, Transformer Engine) that a CPU or local-spec
# run does not use; asking for them explicitly (transformer_impl=transformer_engine) fails with a hint.
warnings.filterwarnings("ignore", message=r".*(Apex|Transformer Engine).*(not installed|Falling back).*")
