"""Rewards, scored in worker processes with a per-item timeout so that no answer can stall a training step.

    from tgpo_megatron.rewards import score
    rewards = score(responses, answers, timeout_s=10.0)     # list[float], 1.0 correct / 0.0 otherwise

Judges: ``math.score_response`` is the training reward, ``math.eval_score`` the evaluation judge,
``choice.choice_score`` the multiple-choice one; any function ``(response, ground_truth) -> (score, reason)``
defined at module level can be given to a ``RewardScorer``.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import Counter
from functools import partial
from typing import Callable, Optional, Sequence

from tgpo_megatron.rewards.choice import choice_score
from tgpo_megatron.rewards.math import ERROR, TIMEOUT, eval_score, score_response
from tgpo_megatron.subprocesses import die_with_parent

__all__ = ["EVAL_JUDGES", "Judge", "RewardScorer", "choice_score", "eval_score", "score", "score_response"]

Judge = Callable[[str, str], tuple[float, str]]
EVAL_JUDGES: dict[str, Judge] = {"math": eval_score, "choice": choice_score}
"""The judges an evaluation set can name (``eval.datasets[].judge``)."""


CHUNK = 16  # items per message to a worker
STARTUP_TIMEOUT_S = 300.0


def _start_worker(parent_pid: int, fn) -> None:
    die_with_parent(parent_pid)
    try:  # a wrong answer runs both judges, so their imports happen now rather than in a timed item
        fn("</think>\\boxed{1}", "2")
    except Exception:  # the item that meets the same failure will report it
        pass


def _ready(_) -> int:
    return os.getpid()


def _score_chunk(fn, items) -> list[tuple[float, str]]:
    return [fn(response, answer) for response, answer in items]


class RewardScorer:
    """A pool of spawned workers scoring ``(response, ground_truth)`` pairs.

    An item that takes longer than ``timeout_s`` (or raises) scores 0 with the reason ``timeout`` (``error``);
    a pool that had a timeout is torn down after the batch, killing the stuck worker, and rebuilt on the next
    call. ``last_reasons`` counts why the items of the last batch scored what they scored.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 10.0, fn: Judge = score_response):
        if workers < 1 or timeout_s <= 0:
            raise ValueError("workers must be >= 1 and timeout_s > 0")
        self.workers, self.timeout_s, self.fn = workers, timeout_s, fn
        self._pool = None
        self.last_reasons: Counter = Counter()

    def _ensure_pool(self):
        if self._pool is None:
            # spawn, not fork: the trainer process holds torch and communication threads
            self._pool = mp.get_context("spawn").Pool(self.workers, initializer=_start_worker,
                                                      initargs=(os.getpid(), self.fn))
            # starting workers and importing the judges takes seconds; it must not count against the
            # first answers' timeouts
            self._pool.map_async(_ready, range(4 * self.workers), chunksize=1).get(timeout=STARTUP_TIMEOUT_S)
        return self._pool

    def score(self, responses: Sequence[str], answers: Sequence[str], judge: Optional[Judge] = None) -> list[float]:
        """Scores in order, by ``judge`` (default: the scorer's). Items go to the workers in small chunks
        (per-item messages cost more than an ordinary answer's scoring); a chunk that times out or fails is
        scored again item by item, on a fresh pool, so only the pathological item gets 0
        (``timeout``/``error``): worst case 2 x timeout_s."""
        fn = judge or self.fn
        if len(responses) != len(answers):
            raise ValueError(f"{len(responses)} responses but {len(answers)} ground-truth answers")
        items = list(zip(responses, answers))
        size = max(1, min(CHUNK, -(-len(items) // (4 * self.workers))))
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        pool = self._ensure_pool()
        pending = [pool.apply_async(_score_chunk, (fn, chunk)) for chunk in chunks]
        results: list = []
        retry = []
        for index, job in enumerate(pending):
            try:
                results.append(job.get(timeout=self.timeout_s))
            except Exception:  # mp.TimeoutError, or a crash inside the chunk
                results.append(None)
                retry.append(index)
        if retry:
            self.close()  # kills a worker stuck on the bad item
            for index in retry:
                results[index] = self._score_one_by_one(fn, chunks[index])
        scores = [float(value) for chunk in results for value, _ in chunk]
        self.last_reasons = Counter(reason for chunk in results for _, reason in chunk)
        return scores

    def _score_one_by_one(self, fn: Judge, items) -> list[tuple[float, str]]:
        pool = self._ensure_pool()
        pending = [pool.apply_async(fn, (r, a)) for r, a in items]
        out, stuck = [], False
        for job in pending:
            try:
                out.append(job.get(timeout=self.timeout_s))
            except mp.TimeoutError:
                out.append((0.0, TIMEOUT))
                stuck = True
            except Exception:  # a parser crash on one answer must not lose the batch
                out.append((0.0, ERROR))
        if stuck:
            self.close()
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


_DEFAULT: Optional[RewardScorer] = None


def score(responses: Sequence[str], answers: Sequence[str], *, timeout_s: float = 10.0,
          any_true: bool = False) -> list[float]:
    """Binary math rewards for ``responses`` (generated text after the template's ``<think>\\n``) against
    ``answers``, with the paper's training reward (docs/method.md §2.3); see ``tgpo_megatron.rewards.math``."""
    global _DEFAULT
    if _DEFAULT is None or _DEFAULT.timeout_s != timeout_s:
        if _DEFAULT is not None:
            _DEFAULT.close()
        _DEFAULT = RewardScorer(timeout_s=timeout_s)
    return _DEFAULT.score(responses, answers, judge=partial(score_response, any_true=any_true))
