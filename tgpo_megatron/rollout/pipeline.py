"""Which weights each step's rollouts come from (``rollout.max_staleness``, docs/method.md §9).

With 0, step k's rollouts are generated at the start of step k with the weights of step k - 1 (version k - 1:
the optimizer steps they hold). With 1, the engine is on ranks of its own and step k + 1's prompts are ordered as
soon as step k's rollouts are taken, so the rollout ranks generate them with version k - 1 while the training
ranks update on step k's; they are collected just before the refit that brings version k. Every rollout is then
one update old (the first step's excepted), and a checkpoint holds the batch collected for the next step, so that
a resumed run trains on exactly the rollouts the uninterrupted run would have.

    pipeline = RolloutPipeline(engine, max_staleness, order)  # order(step) -> indices, prompts, sampling
    batch = pipeline.take(step)        # at the start of the step
    pipeline.collect()                 # before each refit
    pipeline.refitted(version)         # after it
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from tgpo_megatron.rollout.base import Completion, SamplingSpec

Order = Callable[[int], tuple[list[int], list[list[int]], SamplingSpec]]
"""``order(step)``: the step's prompts (dataset indices, token ids) and sampling, drawn from the prompt order."""


@dataclass
class Batch:
    """One step's rollouts as the engine returned them."""

    step: int
    indices: list[int]
    """The dataset rows of the prompts, in order."""
    completions: list[list[Completion]]
    version: int
    """The weights' version that generated them: the optimizer steps those weights hold."""
    timing: dict[str, float] = field(default_factory=dict)
    """The rollout ranks' ``timing/*`` for this batch (with a separate placement)."""

    def metrics(self) -> dict[str, float]:
        return {
            "rollout/weight_version": float(self.version),
            "rollout/staleness": float(self.step - 1 - self.version),
            **self.timing,
        }


class RolloutPipeline:
    def __init__(self, engine, max_staleness: int, order: Order):
        self.engine, self.max_staleness, self.order = engine, max_staleness, order
        self.version = 0
        """The version of the engine's weights (set by :meth:`refitted`)."""
        self.refits = 0
        self.in_flight: Optional[tuple[int, list[int], int, int]] = None
        """The order in progress: its step, prompts' rows, weight version and the refits before it."""
        self.ready: Optional[Batch] = None
        """The next step's batch, collected (and saved with a checkpoint)."""

    def take(self, step: int) -> Batch:
        """Step ``step``'s batch: collected ahead, or generated now; with staleness 1, then order the next."""
        if self.ready is not None:
            if self.ready.step != step:
                raise RuntimeError(f"the rollouts collected for step {self.ready.step} were asked for step {step}")
            batch, self.ready = self.ready, None
        else:
            indices, prompts, sampling = self.order(step)
            completions = self.engine.generate(prompts, sampling)
            batch = Batch(step, indices, completions, self.version, self._timing(self.refits))
        if self.max_staleness:
            indices, prompts, sampling = self.order(step + 1)
            self.engine.submit(prompts, sampling)
            self.in_flight = (step + 1, indices, self.version, self.refits)
        return batch

    def collect(self) -> dict[str, float]:
        """Take the completions in progress (before a refit changes the weights); the training side's wait."""
        if self.in_flight is None:
            return {}
        step, indices, version, refits = self.in_flight
        completions = self.engine.collect()
        self.ready = Batch(step, indices, completions, version, self._timing(refits))
        self.in_flight = None
        return {"timing/wait_rollouts": self.engine.collect_wait_s}

    def refitted(self, version: int) -> None:
        self.version, self.refits = version, self.refits + 1

    def _timing(self, refits: int) -> dict[str, float]:
        """The rollout ranks' report on the batch they just returned (a remote engine's), checked against the
        weights the training side had sent when it ordered the batch."""
        report = getattr(self.engine, "last_report", None)
        if report is None:
            return {}
        if report.loads != refits:
            raise RuntimeError(
                f"the rollout ranks generated with their weight stream {report.loads}, the training ranks had sent "
                f"{refits}: the bridge's orders are out of step"
            )
        return {"timing/rollout_generate": report.generate_s, "timing/rollout_wait": report.wait_s}

    # -- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> Optional[dict]:
        """The batch collected for the next step, in tensors and plain values (``torch.load(weights_only=True)``
        reads it back); None when there is none."""
        b = self.ready
        if b is None:
            return None
        flat = [c for group in b.completions for c in group]
        return {
            "step": b.step,
            "indices": list(b.indices),
            "version": b.version,
            "per_prompt": [len(group) for group in b.completions],
            "token_ids": [torch.tensor(c.token_ids, dtype=torch.int64) for c in flat],
            "logprobs": [torch.tensor(c.logprobs, dtype=torch.float64) for c in flat],
            "finish_reasons": [c.finish_reason for c in flat],
        }

    def load_state_dict(self, state: Optional[dict]) -> None:
        if state is None:
            self.ready = None
            return
        flat = [
            Completion(ids.tolist(), logprobs.tolist(), reason)
            for ids, logprobs, reason in zip(state["token_ids"], state["logprobs"], state["finish_reasons"])
        ]
        completions, start = [], 0
        for n in state["per_prompt"]:
            completions.append(flat[start : start + n])
            start += n
        self.ready = Batch(state["step"], list(state["indices"]), completions, state["version"])
