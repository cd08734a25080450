"""What the trainer and the evaluator need from a rollout engine, independent of vLLM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Protocol, Sequence

import torch


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 1
    """Samples per prompt (G)."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 1024
    """Stop after this many response tokens (finish reason ``length``) unless EOS comes first (``stop``)."""
    seed: Optional[int] = None
    """Prompt ``i`` of a call is sampled with seed ``seed + i``: the same call gives the same samples however
    the prompts are spread over rollout replicas."""

    def __post_init__(self):
        if self.n < 1 or self.max_tokens < 1:
            raise ValueError(f"n={self.n} and max_tokens={self.max_tokens} must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0")


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float]
    """The engine's log-probability of each sampled token (at temperature 1 of the raw logits)."""
    finish_reason: str
    """``stop`` (EOS) or ``length``."""


@dataclass
class RefitStats:
    seconds: float
    bytes: int
    tensors: int

    def metrics(self) -> dict[str, float]:
        return {
            "refit/seconds": self.seconds,
            "refit/bytes": float(self.bytes),
            "refit/GBps": self.bytes / max(self.seconds, 1e-9) / 1e9,
        }


class RolloutEngine(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSpec) -> list[list[Completion]]:
        """``sampling.n`` completions for each prompt, in prompt order, identical on every rank."""

    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> RefitStats:
        """Replace the engine's weights by a stream of Hugging Face-named full tensors (in layer order)."""

    def sleep(self) -> None:
        """Release accelerator memory (weights, KV cache) while the trainer runs; the weights need not
        survive (a refit follows)."""

    def wake(self, tags: Optional[Sequence[str]] = None) -> None:
        """Take the memory back: ``["weights"]`` or ``["kv_cache"]`` alone, or all of it (``None``)."""

    def close(self) -> None:
        """Release the engine at the end of the job (after every other collective)."""
