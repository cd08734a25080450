"""Does a recipe's layout fit its machines and its models? Checked before anything is built, by the trainer
(against the real world size and config.json files) and by the recipe tests (against the GPUs a recipe
states and the models' published shapes)."""
from __future__ import annotations

import math
from typing import Callable

from tgpo_megatron.config import Config
from tgpo_megatron.errors import UserError
from tgpo_megatron.models import load_arch
from tgpo_megatron.models.arch import ModelArch
from tgpo_megatron.parallel import Layout, LayoutError


def check_layouts(config: Config, world: int, arch_of: Callable[[str], ModelArch] = load_arch) -> None:
    """Every layout against the world size and its model's shape."""
    trainer, rollout = config.trainer, config.rollout
    for name, model in (("student", config.student), ("teacher", config.teacher)):
        if model.hf_path:
            try:
                Layout(model.tp, model.pp).validate_for(arch_of(model.hf_path), world)
            except LayoutError as e:
                raise LayoutError(f"{name} layout ({name}.tp={model.tp}, {name}.pp={model.pp}): {e}") from None
    if world % rollout.tp:
        raise UserError(f"rollout.tp={rollout.tp} must divide the world size {world}")
    if config.student.hf_path:
        arch = arch_of(config.student.hf_path)
        if arch.num_attention_heads % rollout.tp or arch.num_kv_heads % rollout.tp:
            raise LayoutError(f"rollout.tp={rollout.tp} must divide the student's attention and KV heads "
                              f"({arch.num_attention_heads}, {arch.num_kv_heads})")
        length = config.data.max_prompt_length + rollout.max_response_length
        if length > arch.max_position_embeddings:
            raise UserError(f"data.max_prompt_length + rollout.max_response_length = {length} exceeds the "
                            f"student's max_position_embeddings={arch.max_position_embeddings}")
    if not math.isfinite(trainer.lr) or trainer.lr <= 0:
        raise UserError(f"trainer.lr={trainer.lr} must be a positive number")
