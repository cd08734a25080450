"""Rewards, scored in worker processes with a per-item timeout so that no answer can stall a training step.

    from tgpo_megatron.rewards import score
    rewards = score(responses, answers, timeout_s=10.0)     # list[float], 1.0 correct / 0.0 otherwise
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import Counter
from typing import Callable, Optional, Sequence

from tgpo_megatron.platform import die_with_parent
from tgpo_megatron.rewards.math import ERROR, TIMEOUT, score_response

__all__ = ["RewardScorer", "score", "score_response"]


class RewardScorer:
    """A pool of spawned workers scoring ``(response, ground_truth)`` pairs.

    An item that takes longer than ``timeout_s`` (or raises) scores 0 with the reason ``timeout`` (``error``);
    a pool that had a timeout is torn down after the batch, killing the stuck worker, and rebuilt on the next
    call. ``last_reasons`` counts why the items of the last batch scored what they scored.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 10.0, any_true: bool = True,
                 fn: Callable[[str, str, bool], tuple[float, str]] = score_response):
        if workers < 1 or timeout_s <= 0:
            raise ValueError("workers must be >= 1 and timeout_s > 0")
        self.workers, self.timeout_s, self.any_true, self.fn = workers, timeout_s, any_true, fn
        self._pool = None
        self.last_reasons: Counter = Counter()

    def _ensure_pool(self):
        if self._pool is None:
            # spawn, not fork: the trainer process holds torch and communication threads
            self._pool = mp.get_context("spawn").Pool(self.workers, initializer=die_with_parent,
                                                      initargs=(os.getpid(),))
        return self._pool

    def score(self, responses: Sequence[str], answers: Sequence[str]) -> list[float]:
        if len(responses) != len(answers):
            raise ValueError(f"{len(responses)} responses but {len(answers)} ground-truth answers")
        pool = self._ensure_pool()
        pending = [pool.apply_async(self.fn, (r, a, self.any_true)) for r, a in zip(responses, answers)]
        scores, reasons, stuck = [], Counter(), False
        for item in pending:
            try:
                value, reason = item.get(timeout=self.timeout_s)
            except mp.TimeoutError:
                value, reason, stuck = 0.0, TIMEOUT, True
            except Exception:  # a parser crash on one answer must not lose the batch
                value, reason = 0.0, ERROR
            scores.append(float(value))
            reasons[reason] += 1
        if stuck:
            self.close()
        self.last_reasons = reasons
        return scores

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


_DEFAULT: Optional[RewardScorer] = None


def score(responses: Sequence[str], answers: Sequence[str], *, timeout_s: float = 10.0,
          any_true: bool = True) -> list[float]:
    """Binary math rewards for ``responses`` (generated text after the template's ``<think>\\n``) against
    ``answers``, with the paper's protocol (tgpo_method.md §2.3); see ``tgpo_megatron.rewards.math``."""
    global _DEFAULT
    if _DEFAULT is None or _DEFAULT.timeout_s != timeout_s or _DEFAULT.any_true != any_true:
        if _DEFAULT is not None:
            _DEFAULT.close()
        _DEFAULT = RewardScorer(timeout_s=timeout_s, any_true=any_true)
    return _DEFAULT.score(responses, answers)
