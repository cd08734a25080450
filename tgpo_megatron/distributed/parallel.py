"""Process groups for the models of one job. The only module that touches Megatron's ``parallel_state``.

The student uses Megatron's global parallel state (its DDP wrapper, distributed optimizer and gradient
clipping read it). Every other model (the teacher) gets a ``ProcessGroupCollection`` of its own, built over
the same world with its own TP/PP sizes, so the two layouts never interfere.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.hyper_comm_grid import HyperCommGrid
from megatron.core.process_groups_config import ProcessGroupCollection

from tgpo_megatron.config.layouts import Layout

__all__ = [
    "initialize_global_parallel",
    "destroy_global_parallel",
    "model_process_groups",
    "seed_model_parallel_rng",
    "merge_sums",
    "sum_over_ranks",
    "warm_up_communicators",
    "distinct_groups",
    "process_groups",
    "destroy_process_groups",
]


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
        tensor_model_parallel_size=layout.tp,
        pipeline_model_parallel_size=layout.pp,
        expert_model_parallel_size=layout.ep,
        expert_tensor_parallel_size=1,
    )
    return ProcessGroupCollection.use_mpu_process_groups()


def destroy_global_parallel() -> None:
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()


def model_process_groups(layout: Layout, reuse=()) -> ProcessGroupCollection:
    """Groups for a model laid out as ``layout`` over the whole world, independent of the global state.

    Where one of ``reuse`` (e.g. the student's groups) or the world has exactly the ranks a group needs, the
    model uses that group instead: each group that communicates costs an NCCL communicator, and two models
    with a layout in common (or a teacher whose experts span the world) share theirs.

    Ranks are ordered tp-cp-dp-pp, as Megatron orders them by default; the expert groups re-split each
    stage's tp x dp ranks as ep x expert-dp, ep fastest (expert TP is 1), as Megatron's expert grid does.
    Every rank must call this with the same layout, in the same order relative to other group creation.
    """
    world = _check_world(layout)
    dp = world // (layout.tp * layout.pp)
    grid = HyperCommGrid([layout.tp, 1, dp, layout.pp], ["tp", "cp", "dp", "pp"])
    groups = {
        name: grid.create_pg(dims)
        for name, dims in {
            "tp": "tp",
            "cp": "cp",
            "dp": "dp",
            "pp": "pp",
            "mp": ["tp", "pp"],
            "tp_cp": ["tp", "cp"],
            "dp_cp": ["cp", "dp"],
            "tp_dp_cp": ["tp", "cp", "dp"],
        }.items()
    }
    groups["embd"] = _first_and_last_stage_group(grid.get_rank_enum("pp"))
    groups["pos_embd"] = _first_stage_group(grid.get_rank_enum("pp"))
    expert_grid = HyperCommGrid([1, layout.ep, world // (layout.ep * layout.pp), layout.pp], ["tp", "ep", "dp", "pp"])
    groups.update(
        {
            name: expert_grid.create_pg(dims)
            for name, dims in {
                "ep": "ep",
                "expt_tp": "tp",
                "expt_dp": "dp",
                "tp_ep": ["tp", "ep"],
                "tp_ep_pp": ["tp", "ep", "pp"],
            }.items()
        }
    )
    known = {tuple(dist.get_process_group_ranks(g)): g for g in [dist.group.WORLD, *reuse] if g is not None}
    for name, group in groups.items():
        if group is not None:
            groups[name] = known.setdefault(tuple(dist.get_process_group_ranks(group)), group)
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
    """Seed Megatron's RNG tracker: reproducible initialisation, a distinct stream per TP rank and per EP rank
    (each holds different experts)."""
    ep = getattr(pg_collection, "ep", None)
    tensor_parallel.model_parallel_cuda_manual_seed(
        seed, tp_rank=pg_collection.tp.rank(), ep_rank=ep.rank() if ep is not None else 0, etp_rank=0
    )


def merge_sums(parts, maxima: tuple[str, ...] = ()) -> dict[str, float]:
    """Dicts of sums added key by key (a None part adds nothing); the keys in ``maxima`` take the largest value."""
    total: dict[str, float] = {}
    for part in parts:
        for key, value in (part or {}).items():
            if key not in total:
                total[key] = value
            else:
                total[key] = max(total[key], value) if key in maxima else total[key] + value
    return total


def sum_over_ranks(values: Optional[dict[str, float]], group=None, maxima: tuple[str, ...] = ()) -> dict[str, float]:
    """Per-rank dicts merged over the ranks (``merge_sums``; None where a rank has nothing to add, e.g. not the
    last pipeline stage)."""
    gathered: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, values, group=group)
    return merge_sums(gathered, maxima)


def distinct_groups(groups) -> list:
    """``groups`` without repeats (by identity), members only (``None`` elsewhere), and none of one rank: a
    one-rank group never needs to communicate, and on NCCL would get a communicator of its own."""
    unique: list = []
    for group in groups:
        if group is not None and group.size() > 1 and all(group is not seen for seen in unique):
            unique.append(group)
    return unique


def warm_up_communicators(groups, device, pipelines=()) -> None:
    """Make each of ``groups`` communicate once now, and each of ``pipelines`` around its ring. NCCL creates a
    communicator (about 0.5-1.5 GiB of GPU buffers) at a group's first collective: created during the first
    step, that memory would appear after vLLM measured what is free and sized its cache. One all-reduce per
    group, and one send/receive around each pipeline ring (point-to-point pairs get communicators of their
    own). Pass exactly the groups the job's collectives use (``Student.groups``, ``Teacher.groups``, WORLD)."""
    for group in distinct_groups(groups):
        dist.all_reduce(torch.zeros(1, device=device), group=group)
    for pp in distinct_groups(pipelines):
        ranks = dist.get_process_group_ranks(pp)
        me = pp.rank()
        send, receive = torch.zeros(1, device=device), torch.empty(1, device=device)
        ops = [
            dist.P2POp(dist.isend, send, ranks[(me + 1) % len(ranks)], group=pp),
            dist.P2POp(dist.irecv, receive, ranks[(me - 1) % len(ranks)], group=pp),
        ]
        for request in dist.batch_isend_irecv(ops):
            request.wait()


def process_groups() -> set:
    """Every process group this rank belongs to now (the default one included)."""
    return set(dist.distributed_c10d._world.pg_map)


def destroy_process_groups(groups) -> None:
    """Destroy ``groups`` (those still alive): Megatron destroys only its gloo groups, and a run's NCCL
    communicators would otherwise keep their GPU buffers for the life of the process (``tgpo train-many``)."""
    alive = process_groups()
    for group in groups:
        if group in alive and group is not dist.group.WORLD:
            dist.destroy_process_group(group)
