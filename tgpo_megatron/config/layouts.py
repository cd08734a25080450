"""A model's parallel layout and what it must divide (the recipe as a whole: ``validation``). Imports without
torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tgpo_megatron.config.arch import ModelArch
from tgpo_megatron.errors import UserError


class LayoutError(UserError, ValueError):
    """A parallel layout that cannot shard the model or the world."""


@dataclass(frozen=True)
class Layout:
    """A model's parallel layout: tensor, pipeline and expert sizes (data parallel is what is left of the
    world). Experts are never split over tensor-parallel ranks (expert TP is 1): ``ep`` ranks of each
    pipeline stage, taken in TP-then-DP order as Megatron does, each hold ``num_experts / ep`` whole experts,
    the layout Megatron recommends for fine-grained experts such as Qwen3-MoE's."""

    tp: int = 1
    pp: int = 1
    ep: int = 1

    def __post_init__(self):
        if self.tp < 1 or self.pp < 1 or self.ep < 1:
            raise LayoutError(f"parallel sizes must be >= 1, got tp={self.tp} pp={self.pp} ep={self.ep}")

    def validate_for(self, arch: ModelArch, world_size: Optional[int] = None) -> None:
        """Raise ``ValueError`` naming the field when this layout cannot shard ``arch``."""
        if arch.num_attention_heads % self.tp:
            raise LayoutError(f"tp={self.tp} does not divide num_attention_heads={arch.num_attention_heads}")
        if arch.num_kv_heads % self.tp:
            raise LayoutError(f"tp={self.tp} does not divide num_key_value_heads={arch.num_kv_heads}")
        if arch.moe is None and arch.intermediate_size % self.tp:
            raise LayoutError(f"tp={self.tp} does not divide intermediate_size={arch.intermediate_size}")
        if arch.moe is None and self.ep > 1:
            raise LayoutError(f"ep={self.ep} needs a mixture-of-experts model; this one is dense ({arch.family})")
        if arch.moe is not None and arch.moe.num_experts % self.ep:
            raise LayoutError(f"ep={self.ep} does not divide num_experts={arch.moe.num_experts}")
        if arch.num_layers % self.pp:
            raise LayoutError(f"pp={self.pp} does not divide num_hidden_layers={arch.num_layers}")
        if world_size is not None:
            self.check_world_size(world_size)

    def check_world_size(self, world_size: int) -> None:
        """The world must hold whole replicas of this layout."""
        if world_size % (self.tp * self.pp):
            raise LayoutError(f"world size {world_size} is not a multiple of tp*pp={self.tp * self.pp}")
        if world_size % (self.ep * self.pp):
            raise LayoutError(f"world size {world_size} is not a multiple of ep*pp={self.ep * self.pp}")
