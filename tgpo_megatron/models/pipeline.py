"""Running a model stage through Megatron-Core's real pipeline schedules with its own process groups."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.pipeline_parallel.p2p_communication import P2PCommunicator


def forward_backward(model, pg_collection, forward_step: Callable, microbatches: Sequence[Any], *,
                     seq_length: int, micro_batch_size: int, forward_only: bool) -> list:
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


def collect_forward(model, pg_collection, microbatches: Sequence[dict],
                    consume: Callable[[torch.Tensor, dict], Any]) -> list:
    """Forward-only pass; on the last pipeline stage returns ``consume(logits_shard, mb)`` per micro-batch
    (``logits_shard`` is ``[b, s, V_padded / tp]``), elsewhere an empty list.

    Each micro-batch is a dict with ``tokens`` and ``position_ids`` ``[b, s]`` (and optionally
    ``attention_mask``); all micro-batches must share one shape, as Megatron's p2p buffers assume.
    """
    results = []

    def step(mb, m):
        output = m(mb["tokens"], mb["position_ids"], mb.get("attention_mask"))

        def loss_func(logits):
            results.append(consume(logits, mb))
            return logits.new_zeros(()), {}

        return output, loss_func

    b, s = microbatches[0]["tokens"].shape
    with torch.no_grad():
        forward_backward(model, pg_collection, step, microbatches, seq_length=s, micro_batch_size=b,
                         forward_only=True)
    return results
