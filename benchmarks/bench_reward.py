"""Reward scoring throughput: responses per second through the worker pool, by number of workers.

    python benchmarks/bench_reward.py --items 512

Responses are realistic (a thought block, then a boxed answer in one of several LaTeX forms), half correct.
"""

import argparse
import random
import time

from tgpo_megatron.rewards import RewardScorer

FORMS = [
    "\\boxed{{{v}}}",
    "\\boxed{{\\frac{{{n}}}{{{d}}}}}",
    "The answer is $\\boxed{{{v}}}$.",
    "\\boxed{{x = {v}}}",
    "\\boxed{{{v}\\text{{ cm}}}}",
]


def make_items(count: int, seed: int = 0):
    rng = random.Random(seed)
    responses, answers = [], []
    for _ in range(count):
        n, d = rng.randint(1, 99), rng.randint(2, 9)
        value = rng.randint(1, 999)
        right = rng.random() < 0.5
        form = rng.choice(FORMS)
        shown = value if right else value + 1
        responses.append("Reasoning " * 40 + "</think>\n" + form.format(v=shown, n=n * (1 if right else 2), d=d))
        answers.append(f"\\frac{{{n}}}{{{d}}}" if "frac" in form else str(value))
    return responses, answers


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=512)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    responses, answers = make_items(args.items)
    print(f"\nreward scoring, {args.items} responses\n")
    print("| workers | seconds | responses/s | mean reward |\n|---|---|---|---|")
    for workers in args.workers:
        scorer = RewardScorer(workers=workers)
        scorer.score(responses[: workers * 2], answers[: workers * 2])  # start the pool and import math_verify
        start = time.perf_counter()
        scores, _ = scorer.score(responses, answers)
        seconds = time.perf_counter() - start
        scorer.close()
        print(f"| {workers} | {seconds:.2f} | {args.items / seconds:.0f} | {sum(scores) / len(scores):.2f} |")


if __name__ == "__main__":
    main()
