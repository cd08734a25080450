"""Rewards, scored in worker processes with a per-item timeout and a per-batch deadline, so that no answer can
stall a training step.

    scorer = RewardScorer(workers=2, timeout_s=10.0)          # the training reward by default
    scores, reasons = scorer.score(responses, answers, deadline_s=60.0)

Judges: ``math.score_response`` is the training reward, ``math.eval_score`` the evaluation judge,
``choice.choice_score`` the multiple-choice one; any function ``(response, ground_truth) -> (score, reason)``
defined at module level can be given to a ``RewardScorer``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import Counter
from typing import Callable, Optional, Sequence

from tgpo_megatron.rewards import math as math_judges
from tgpo_megatron.rewards.choice import choice_score
from tgpo_megatron.rewards.math import DEADLINE, ERROR, TIMEOUT, eval_score, score_response
from tgpo_megatron.subprocesses import die_with_parent

__all__ = ["EVAL_JUDGES", "Judge", "RewardScorer", "choice_score", "eval_score", "score_response"]

Judge = Callable[[str, str], tuple[float, str]]
EVAL_JUDGES: dict[str, Judge] = {"math": eval_score, "choice": choice_score}
"""The judges an evaluation set can name (``eval.datasets[].judge``, ``extra_judges``; their names are
``config.EVAL_JUDGE_NAMES``)."""


CHUNK = 16  # items per message to a worker
STARTUP_TIMEOUT_S = 300.0


def _start_worker(parent_pid: int, fn, timeout_s: float) -> None:
    # Out of the trainer's process group: launchers stop a rank by signalling its whole group (torchrun's killpg),
    # and a worker dying of that while holding the pool's queue lock would hang the trainer's close() for good.
    # The trainer closes its workers itself, and they die with it (die_with_parent).
    os.setsid()
    die_with_parent(parent_pid)
    math_judges.set_verify_timeout(timeout_s)
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
    items not scored when a batch's deadline passes score 0 with the reason ``deadline``. A pool that had a
    timeout is torn down after the batch, killing the stuck worker, and rebuilt on the next call.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 10.0, fn: Judge = score_response):
        if workers < 1 or timeout_s <= 0:
            raise ValueError("workers must be >= 1 and timeout_s > 0")
        self.workers, self.timeout_s, self.fn = workers, timeout_s, fn
        self._pool = None

    def _ensure_pool(self):
        if self._pool is None:
            # spawn, not fork: the trainer process holds torch and communication threads
            self._pool = mp.get_context("spawn").Pool(
                self.workers, initializer=_start_worker, initargs=(os.getpid(), self.fn, self.timeout_s)
            )
            # starting workers and importing the judges takes seconds; it must not count against the
            # first answers' timeouts
            self._pool.map_async(_ready, range(4 * self.workers), chunksize=1).get(timeout=STARTUP_TIMEOUT_S)
        return self._pool

    def score(
        self,
        responses: Sequence[str],
        answers: Sequence[str],
        judge: Optional[Judge] = None,
        deadline_s: Optional[float] = None,
    ) -> tuple[list[float], Counter]:
        """Scores in order, by ``judge`` (default: the scorer's), and the count of each reason. Items go to the
        workers in small chunks (per-item messages cost more than an ordinary answer's scoring); a chunk that
        times out or fails is scored again item by item, on a fresh pool, so only the pathological item gets 0
        (``timeout``/``error``): worst case 2 x timeout_s per chunk, so several pathological items add up.
        ``deadline_s`` bounds the whole batch: what is not scored by then scores 0 (``deadline``)."""
        fn = judge or self.fn
        if len(responses) != len(answers):
            raise ValueError(f"{len(responses)} responses but {len(answers)} ground-truth answers")
        end = None if deadline_s is None else time.monotonic() + deadline_s
        items = list(zip(responses, answers))
        size = max(1, min(CHUNK, -(-len(items) // (4 * self.workers))))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        pool = self._ensure_pool()
        pending = [pool.apply_async(_score_chunk, (fn, chunk)) for chunk in chunks]
        results: list = []
        retry = []
        for index, job in enumerate(pending):
            try:
                results.append(job.get(timeout=self._wait(end)))
            except Exception:  # mp.TimeoutError, or a crash inside the chunk
                results.append(None)
                retry.append(index)
        if retry:
            self.close()  # kills a worker stuck on the bad item
            for index in retry:
                results[index] = self._score_one_by_one(fn, chunks[index], end)
        scores = [float(value) for chunk in results for value, _ in chunk]
        return scores, Counter(reason for chunk in results for _, reason in chunk)

    def _wait(self, end: Optional[float]) -> float:
        """How long to wait for the next result: the item's limit, or what is left of the batch's deadline."""
        return self.timeout_s if end is None else max(0.0, min(self.timeout_s, end - time.monotonic()))

    def _score_one_by_one(self, fn: Judge, items, end: Optional[float]) -> list[tuple[float, str]]:
        if end is not None and time.monotonic() >= end:
            return [(0.0, DEADLINE)] * len(items)
        pool = self._ensure_pool()
        pending = [pool.apply_async(fn, (r, a)) for r, a in items]
        out, stuck = [], False
        for job in pending:
            try:
                out.append(job.get(timeout=self._wait(end)))
            except mp.TimeoutError:
                late = end is not None and time.monotonic() >= end
                out.append((0.0, DEADLINE if late else TIMEOUT))
                stuck = True
            except Exception:  # a parser crash on one answer must not lose the batch
                out.append((0.0, ERROR))
        if stuck:
            self.close()
        return out

    def close(self) -> None:
        if self._pool is not None:
            _stop_workers(self._pool)
            self._pool.terminate()
            self._pool.join()
            self._pool = None


def _stop_workers(pool) -> None:
    """Kill ``pool``'s workers, then free the two locks only workers take if a dead one held them: the task queue's
    read lock (an idle worker holds it while it waits for a task) and the result queue's write lock (held while a
    result is written). ``Pool.terminate`` takes both, and would wait forever on one held by a worker that died
    (killed by the OOM killer, by a signal, or here). Reaches into ``multiprocessing.pool.Pool``'s workers and
    queues (``_pool``, ``_inqueue``, ``_outqueue``)."""
    workers = list(pool._pool)
    for worker in workers:
        worker.kill()
    for worker in workers:
        worker.join()
    for lock in (pool._inqueue._rlock, pool._outqueue._wlock):
        lock.acquire(block=False)  # taken now, or held by a dead worker: either way, released below
        lock.release()
