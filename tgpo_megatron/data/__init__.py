"""Prompt datasets, chat templates, the deterministic prompt order, and the synthetic verifiable task."""

from tgpo_megatron.data.prompts import PromptDataset, PromptExample, load_prompts, render_prompt
from tgpo_megatron.data.sampler import PromptSampler

__all__ = ["PromptDataset", "PromptExample", "PromptSampler", "load_prompts", "render_prompt"]
