"""What the engine-mismatch correction (``rollout.correction``) costs at the paper's shapes, on the host.

    python benchmarks/bench_correction.py

One step of the 7B recipe's rollouts (``bench_batching``'s ``paper`` distribution: 1,024 rollouts, responses
log-normal with median 1,500 tokens, capped at 8,192), engine log-probs 0.05 nats from π_old. Each mode's
weights are computed rollout by rollout, as ``trainer.correction`` does, and compared side by side, in the same
run, with the drift metrics the trainer already computes on the same rollouts every step
(``rollout.drift.logprob_drift``). At DP = d a rank computes 1/d of the rollouts.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_batching import rollout_shapes  # noqa: E402

from tgpo_megatron.losses.coefficients import CorrectionConfig  # noqa: E402
from tgpo_megatron.losses.correction import correction_weights  # noqa: E402
from tgpo_megatron.rollout.drift import logprob_drift  # noqa: E402


def rollouts(seed: int = 0) -> list[tuple[torch.Tensor, list[float]]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _, length in rollout_shapes("paper", seed):
        old = -torch.rand(length, generator=g) * 3
        out.append((old, (old + 0.05 * torch.randn(length, generator=g)).tolist()))  # the engine's: a list
    return out


def seconds(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    data = rollouts()
    tokens = sum(old.numel() for old, _ in data)

    def drift():
        for old, engine in data:
            logprob_drift(torch.tensor(engine), old, torch.ones(old.numel()))

    def weights(config):
        return lambda: [correction_weights(torch.tensor(engine), old, config) for old, engine in data]

    baseline = seconds(drift)
    print(f"{len(data)} rollouts, {tokens:,} response tokens (one step of the paper's shape)\n")
    print("| per-rollout host work | time / the drift metrics' |")
    print("|---|---|")
    print("| drift metrics (every step today) | 1.00 |")
    for mode in ("tis", "mask", "sequence_mask"):
        print(f"| `{mode}` weights | {seconds(weights(CorrectionConfig(mode=mode))) / baseline:.2f} |")


if __name__ == "__main__":
    main()
