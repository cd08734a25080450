"""Process groups for the models of one job. The only module that touches Megatron's ``parallel_state``.

The student uses Megatron's global parallel state (its DDP wrapper, distributed optimizer and gradient
clipping read it). Every other model (the teacher) gets a ``ProcessGroupCollection`` of its own, built over
the same world with its own TP/PP sizes, so the two layouts never interfere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.hyper_comm_grid import HyperCommGrid
from megatron.core.process_groups_config import ProcessGroupCollection

from tgpo_megatron.errors import UserError

if TYPE_CHECKING:  # models imports this module to build its layouts
    from tgpo_megatron.models.arch import ModelArch


class LayoutError(UserError, ValueError):
    """A parallel layout that cannot shard the model or the world."""


@dataclass(frozen=True)
class Layout:
    """A model's parallel layout: tensor and pipeline sizes (data parallel is what is left of the world)."""

    tp: int = 1
    pp: int = 1

    def __post_init__(self):
        if self.tp < 1 or self.pp < 1:
            raise LayoutError(f"parallel sizes must be >= 1, got tp={self.tp} pp={self.pp}")

    def validate_for(self, arch: ModelArch, world_size: Optional[int] = None) -> None:
        """Raise ``ValueError`` naming the field when this layout cannot shard ``arch``."""
        if arch.num_attention_heads % self.tp:
            raise LayoutError(f"tp={self.tp} does not divide num_attention_heads={arch.num_attention_heads}")
        if arch.num_kv_heads % self.tp:
            raise LayoutError(f"tp={self.tp} does not divide num_key_value_heads={arch.num_kv_heads}")
        if arch.intermediate_size % self.tp:
            raise LayoutError(f"tp={self.tp} does not divide intermediate_size={arch.intermediate_size}")
        if arch.num_layers % self.pp:
            raise LayoutError(f"pp={self.pp} does not divide num_hidden_layers={arch.num_layers}")
        if world_size is not None:
            self.check_world_size(world_size)

    def check_world_size(self, world_size: int) -> None:
        if world_size % (self.tp * self.pp):
            raise LayoutError(f"world size {world_size} is not a multiple of tp*pp={self.tp * self.pp}")


def _check_world(layout: Layout) -> int:
    world = dist.get_world_size()
    layout.check_world_size(world)
    return world


def initialize_global_parallel(layout: Layout) -> ProcessGroupCollection:
    """Set Megatron's global parallel state to ``layout`` (the trained model's layout) and return its groups."""
    _check_world(layout)
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tp, pipeline_model_parallel_size=layout.pp
    )
    return ProcessGroupCollection.use_mpu_process_groups()


def destroy_global_parallel() -> None:
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()


def model_process_groups(layout: Layout) -> ProcessGroupCollection:
    """Groups for a model laid out as ``layout`` over the whole world, independent of the global state.

    Ranks are ordered tp-cp-dp-pp, as Megatron orders them by default. Every rank must call this with the
    same layout, in the same order relative to other group creation.
    """
    world = _check_world(layout)
    dp = world // (layout.tp * layout.pp)
    grid = HyperCommGrid([layout.tp, 1, dp, layout.pp], ["tp", "cp", "dp", "pp"])
    groups = {name: grid.create_pg(dims) for name, dims in {
        "tp": "tp", "cp": "cp", "dp": "dp", "pp": "pp", "mp": ["tp", "pp"], "tp_cp": ["tp", "cp"],
        "dp_cp": ["cp", "dp"], "tp_dp_cp": ["tp", "cp", "dp"],
    }.items()}
    groups["embd"] = _first_and_last_stage_group(grid.get_rank_enum("pp"))
    groups["pos_embd"] = _first_stage_group(grid.get_rank_enum("pp"))
    return ProcessGroupCollection(**groups)


def _first_and_last_stage_group(pipelines: list[list[int]]):
    mine = None
    for ranks in pipelines:
        members = sorted({ranks[0], ranks[-1]})
        group = dist.new_group(members)
        if dist.get_rank() in members:
            mine = group
    return mine


def _first_stage_group(pipelines: list[list[int]]):
    mine = None
    for ranks in pipelines:
        group = dist.new_group([ranks[0]])
        if dist.get_rank() == ranks[0]:
            mine = group
    return mine


def seed_model_parallel_rng(seed: int, pg_collection: ProcessGroupCollection) -> None:
    """Seed Megatron's RNG tracker: reproducible initialisation, a distinct stream per TP rank."""
    tensor_parallel.model_parallel_cuda_manual_seed(seed, tp_rank=pg_collection.tp.rank(), ep_rank=0, etp_rank=0)
