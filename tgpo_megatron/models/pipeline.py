"""Running a model stage through Megatron-Core's real pipeline schedules with its own process groups.

This is where micro-batches meet the model: each is moved to the model's device just before its forward,
packed ones become Megatron's THD ``PackedSeqParams``, and what a forward-only pass collects comes back to
host memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.pipeline_parallel.p2p_communication import P2PCommunicator

from tgpo_megatron.batching import MicroBatch, Rollout, micro_batches


def forward_backward(
    model,
    pg_collection,
    forward_step: Callable,
    microbatches: Sequence[Any],
    *,
    seq_length: int,
    micro_batch_size: int,
    forward_only: bool,
) -> list:
    """Megatron's schedule (1F1B when PP > 1) over ``microbatches``; returns the last stage's loss dicts.

    ``forward_step(microbatch, model) -> (output, loss_func)`` as in Megatron's ``forward_step_func``,
    except that it receives the micro-batch itself rather than an iterator.
    """
    schedule = get_forward_backward_func(pp_size=pg_collection.pp.size())
    batches = iter(microbatches)
    return schedule(
        forward_step_func=lambda data_iterator, m: forward_step(next(data_iterator), m),
        data_iterator=batches,
        model=[model],
        num_microbatches=len(microbatches),
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=forward_only,
        pg_collection=pg_collection,
        p2p_communicator=P2PCommunicator(pg_collection.pp, model.config),
    )


def sequence_multiple(model) -> int:
    """What a micro-batch's sequence length must be a multiple of: with sequence parallelism, each TP rank
    holds an equal slice of the sequence."""
    config = model.config
    return config.tensor_model_parallel_size if config.sequence_parallel else 1


@dataclass
class PackedSequences(PackedSeqParams):
    """Megatron's THD parameters, which it hands unchanged to the core attention, plus the offsets on the host:
    the local attention splits the row by them without reading ``cu_seqlens`` back from the GPU in every layer."""

    host_cu_seqlens: tuple[int, ...] = ()


def model_forward(model, mb: MicroBatch) -> torch.Tensor:
    """The model's output for a micro-batch already on its device: ``[rows, width, V_padded / tp]`` logits on
    the last pipeline stage, hidden states elsewhere."""
    packed = None
    if mb.packed:
        packed = PackedSequences(
            qkv_format="thd",
            cu_seqlens_q=mb.cu_seqlens,
            cu_seqlens_kv=mb.cu_seqlens,
            max_seqlen_q=mb.max_seqlen,
            max_seqlen_kv=mb.max_seqlen,
            host_cu_seqlens=mb.bounds,
        )
    return model(mb.tokens, mb.position_ids, None, packed_seq_params=packed)


def run_micro_batches(
    model,
    pg_collection,
    forward_step: Callable[[MicroBatch, Any], tuple],
    micro_batches: Sequence[MicroBatch],
    *,
    forward_only: bool,
) -> list:
    """``forward_backward`` over our micro-batches: each reaches ``forward_step`` on the model's device.

    Packed micro-batches differ in width; with PP > 1 the stages then exchange each activation's shape
    before sending it (Megatron's ``variable_seq_lengths``) instead of padding every micro-batch to one width.
    """
    device = next(model.parameters()).device
    model.config.variable_seq_lengths = len({tuple(mb.tokens.shape) for mb in micro_batches}) > 1
    rows, width = micro_batches[0].tokens.shape
    return forward_backward(
        model,
        pg_collection,
        lambda mb, m: forward_step(mb.to(device), m),
        micro_batches,
        seq_length=width,
        micro_batch_size=rows,
        forward_only=forward_only,
    )


def _to_host(value):
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(v) for v in value)
    return value


def collect_forward(
    model, pg_collection, micro_batches: Sequence[MicroBatch], consume: Callable[[torch.Tensor, MicroBatch], Any]
) -> list:
    """Forward-only pass; on the last pipeline stage returns ``consume(logits_shard, mb)`` per micro-batch, in
    host memory (``logits_shard`` is ``[rows, width, V_padded / tp]``), elsewhere an empty list."""
    results = []

    def step(mb, m):
        def loss_func(logits):
            results.append(_to_host(consume(logits, mb)))
            return logits.new_zeros(()), {}

        return model_forward(m, mb), loss_func

    with torch.no_grad():
        run_micro_batches(model, pg_collection, step, micro_batches, forward_only=True)
    return results


def forward_per_rollout(
    model,
    pg_collection,
    rollouts: Sequence[Rollout],
    consume,
    groups: Sequence[Sequence[int]],
    *,
    keys: Sequence[str] = (),
    packed: bool = True,
) -> list:
    """A forward-only pass over ``groups``, this rank's micro-batches as lists of indices into ``rollouts``
    (empty ones allowed, see ``batching.plan_micro_batches``).

    ``consume(logits_shard, mb) -> {name: [rows, width, ...] tensor}``; returns, on the last pipeline stage,
    one ``{name: response-token slice}`` per rollout in host memory, elsewhere (and for rollouts outside
    ``groups``) ``None``.
    """
    out: list = [None] * len(rollouts)
    if not groups:
        return out
    mbs = micro_batches(rollouts, groups, keys, packed=packed, pad_multiple=sequence_multiple(model))
    for values, mb, group in zip(collect_forward(model, pg_collection, mbs, consume), mbs, groups):
        slices = {name: mb.per_rollout(tensor) for name, tensor in values.items()}
        for j, i in enumerate(group):
            out[i] = {name: per[j] for name, per in slices.items()}
    return out


def forward_gathered(
    model,
    pg_collection,
    rollouts: Sequence[Rollout],
    consume,
    groups: Sequence[Sequence[int]],
    *,
    device: torch.device,
    group=None,
    keys: Sequence[str] = (),
    packed: bool = True,
) -> list:
    """``forward_per_rollout`` over this rank's ``groups``, then every rank of ``group`` (default: the world)
    holds the values of every rollout that some rank of ``group`` computed (``None`` for the others).
    ``device`` is the model's compute device, where the gather's collective takes tensors: not where its
    parameters are when they are offloaded to host memory (a teacher rank with no rollouts to compute keeps
    them there).

    Each value is sent once, by the first tensor-parallel rank of the last pipeline stage that computed it:
    ``group`` is the model's replica (``pg.mp``) when each replica computes what it alone needs, the world when
    the replicas split the work and all need all of it."""
    values = forward_per_rollout(model, pg_collection, rollouts, consume, groups, keys=keys, packed=packed)
    sender = pg_collection.pp.rank() == pg_collection.pp.size() - 1 and pg_collection.tp.rank() == 0
    return gather_rollout_values(values, sender, device, group)


def gather_rollout_values(values: list, send: bool, device: torch.device, group=None) -> list:
    """Every rank of ``group`` gets each rollout's value (``{name: host tensor}``) from the ranks with ``send``
    set (those that hold it; ``None`` where no rank sends one); ``device`` is where the group's collectives
    take tensors (the model's: NCCL refuses host tensors).

    The tensors travel as one flat byte buffer per rank through one ``all_gather``; only their shapes are
    pickled. An object all-gather of the tensors themselves, which pickles each one, took 4-8x as long at the
    paper's shapes (3x with top-16; benchmarks/bench_gather.py)."""
    held = [(i, value) for i, value in enumerate(values) if value is not None] if send else []
    layout = [(i, [(name, t.dtype, tuple(t.shape)) for name, t in value.items()]) for i, value in held]
    layouts: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(layouts, layout, group=group)
    chunks = [t.contiguous().view(-1).view(torch.uint8) for _, value in held for t in value.values()]
    sizes = [sum(math.prod(shape) * dtype.itemsize for _, spec in part for _, dtype, shape in spec) for part in layouts]
    out: list = [None] * len(values)
    if not max(sizes):
        return out
    buffer = torch.zeros(max(sizes), dtype=torch.uint8)
    if chunks:
        torch.cat(chunks, out=buffer[: sizes[dist.get_rank(group)]])
    received = [torch.empty(max(sizes), dtype=torch.uint8, device=device) for _ in sizes]
    dist.all_gather(received, buffer.to(device), group=group)
    for part, data in zip(layouts, received):
        data, offset = data.cpu(), 0
        for i, spec in part:
            out[i] = {}
            for name, dtype, shape in spec:
                size = math.prod(shape) * dtype.itemsize
                out[i][name] = data[offset : offset + size].clone().view(dtype).view(shape)
                offset += size
    return out
