"""What the per-rollout gather after a forward-only pass moves at the paper's shapes, and what it costs.

    python benchmarks/bench_gather.py               # one step of the 7B recipe's rollouts, 2 gloo processes
    python benchmarks/bench_gather.py --repeats 5

``models.pipeline.gather_rollout_values`` hands every rank each rollout's per-token values (the teacher's ids
to the student, the student's log-probs within its replica). Each of 2 processes holds half of one step's
rollouts (the ``paper`` distribution of bench_batching.py: 1,024 rollouts, responses log-normal with median
1,500, capped at 8,192) and gathers them, side by side and alternating, three ways:
- object: the previous behaviour, replayed here: one ``all_gather_object`` of the per-rollout tensors;
- ours: ``gather_rollout_values``, the tensors as one flat byte buffer, only their shapes pickled;
- floor: one ``all_gather`` of an uninitialised uint8 tensor of the same bytes (moving them, nothing else).
Payloads, as the trainer builds them:
- teacher, argmax: int32 argmax id + float32 log-prob of the sampled token per response token;
- teacher, top-16: the same plus 16 int32 ids and 16 float32 probabilities (``tgpo_fwd_topk``);
- student: float32 log-probs of the sampled and the teacher's token (``token_logprobs`` with one id key).
Prints MB per step, the median seconds of each way and the ratios. Absolute seconds are of gloo on this CPU;
on GPUs ``all_gather_object`` stages the pickles through the device, which this does not measure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))
from bench_batching import rollout_shapes  # noqa: E402

PAYLOADS = {
    # name: {key: (dtype, values per token)}
    "teacher, argmax": {"teacher_ids": (torch.int32, 1), "teacher_logp": (torch.float32, 1)},
    "teacher, top-16": {
        "teacher_ids": (torch.int32, 1),
        "teacher_logp": (torch.float32, 1),
        "teacher_topk_ids": (torch.int32, 16),
        "teacher_topk_probs": (torch.float32, 16),
    },
    "student": {"logps": (torch.float32, 2)},
}


def values_of(payload: dict, lengths: list[int], mine: range) -> list:
    out: list = [None] * len(lengths)
    for i in mine:
        out[i] = {
            key: torch.ones((lengths[i], width) if width > 1 else (lengths[i],), dtype=dtype)
            for key, (dtype, width) in payload.items()
        }
    return out


def object_gather(values: list) -> list:
    mine = {i: value for i, value in enumerate(values) if value is not None}
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    out: list = [None] * len(values)
    for part in gathered:
        for i, value in part.items():
            out[i] = value
    return out


def worker(rank: int, world: int, repeats: int, port: int, results) -> None:
    from tgpo_megatron.models.pipeline import gather_rollout_values

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    lengths = [response for _, response in rollout_shapes("paper")]
    share = len(lengths) // world
    mine = range(rank * share, (rank + 1) * share if rank < world - 1 else len(lengths))
    for name, payload in PAYLOADS.items():
        values = values_of(payload, lengths, mine)
        nbytes = sum(t.numel() * t.element_size() for v in values if v is not None for t in v.values())
        sizes = [0] * world
        dist.all_gather_object(sizes, nbytes)
        times = {"object": [], "ours": [], "floor": []}
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            gathered = object_gather(values)
            times["object"].append(time.perf_counter() - start)
            del gathered
            dist.barrier()
            start = time.perf_counter()
            gathered = gather_rollout_values(values, True, torch.device("cpu"))
            times["ours"].append(time.perf_counter() - start)
            assert all(v is not None for v in gathered)
            del gathered
            dist.barrier()
            start = time.perf_counter()
            flat = torch.empty(max(sizes), dtype=torch.uint8)
            out = [torch.empty(max(sizes), dtype=torch.uint8) for _ in range(world)]
            dist.all_gather(out, flat)
            times["floor"].append(time.perf_counter() - start)
            del out
        if rank == 0:
            results[name] = (sum(sizes), *(statistics.median(times[way]) for way in ("object", "ours", "floor")))
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--world", type=int, default=2)
    args = p.parse_args()
    lengths = [response for _, response in rollout_shapes("paper")]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(args.world, args.repeats, 29555, results), nprocs=args.world)
        results = dict(results)
    print(
        f"\n{len(lengths)} rollouts, {sum(lengths):,} response tokens (median {statistics.median(lengths):.0f}, "
        f"max {max(lengths)}), {args.world} gloo processes, median of {args.repeats}\n"
    )
    print("| payload | MB gathered | object s | ours s | floor s | object / ours | ours / floor |")
    print("|---|---|---|---|---|---|---|")
    for name, (nbytes, obj, ours, floor) in results.items():
        print(
            f"| {name} | {nbytes / 1e6:.1f} | {obj:.3f} | {ours:.3f} | {floor:.3f} | {obj / ours:.1f} | "
            f"{ours / floor:.2f} |"
        )


if __name__ == "__main__":
    main()
