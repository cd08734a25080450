"""The job's ranks split into a training world and a rollout world joined by a bridge group.

    torchrun --nproc-per-node 3 worlds_worker.py --rollout-ranks 1 --out DIR

Each rank writes ``DIR/<job rank>.json``: its side, its side's world as torch.distributed sees it, a sum over
that world, and what crossed the bridge each way.
"""

import argparse
import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
from tgpo_megatron.distributed.worlds import bridge_broadcast, bridge_group, split_world  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rollout-ranks", type=int, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    job_rank = int(os.environ["RANK"])
    side = split_world(args.rollout_ranks)
    dist.init_process_group("gloo")  # the side's own world, from the rewritten variables
    total = torch.tensor([float(side.rank + 1)])
    dist.all_reduce(total)
    bridge = bridge_group(side, "gloo")
    weights = torch.arange(6, dtype=torch.float32) if side.bridge_rank == 0 else torch.zeros(6)
    rollouts = torch.full((3,), 7.0) if side.bridge_rank == 1 else torch.zeros(3)
    if bridge is not None:
        bridge_broadcast(bridge, weights, root=0)  # the first training rank to every rollout rank
        bridge_broadcast(bridge, rollouts, root=1)  # the first rollout rank back
    result = {
        "role": side.role,
        "rank": side.rank,
        "bridge_rank": side.bridge_rank,
        "world_size": dist.get_world_size(),
        "world_rank": dist.get_rank(),
        "sum": total.item(),
        "weights": weights.tolist(),
        "rollouts": rollouts.tolist(),
    }
    with open(os.path.join(args.out, f"{job_rank}.json"), "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
