"""The objectives' coefficients, the λ schedule and the engine-mismatch correction's section: plain Python, so
that a recipe (whose ``algorithm`` section is a :class:`LossConfig`) validates where torch is not installed, e.g.
the launcher on a login node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tgpo_megatron.losses.aggregation import LOSS_AGG_MODES, LOSS_SCALES
from tgpo_megatron.losses.registry import ALGORITHMS

CHUNK_TOKENS = 256
"""Tokens per chunk of the fused loss head by default (``algorithm.chunk_tokens``)."""


@dataclass(frozen=True)
class LossConfig:
    """Loss coefficients; the defaults are the paper's (docs/method.md §2.4, §6)."""

    clip_eps: float = 0.2
    """PPO clip range ε (symmetric)."""
    entropy_coeff: float = 1e-3
    """α, the entropy-bonus coefficient."""
    lambda_init: Optional[float] = None
    """λ0 of the teacher term; None takes the paper's value for the algorithm (``Algorithm.default_lambda``)."""
    lambda_decay: Optional[float] = None
    """δ, the linear decay of λ per step; None takes the paper's value (``Algorithm.default_lambda``)."""
    lambda_min: float = 0.0
    """The floor λ decays to."""
    kdrl_beta: float = 0.002
    """β of KDRL's k2 term (not decayed)."""
    loss_agg_mode: Optional[str] = None
    """How per-token losses make a mini-batch's loss: token-mean, seq-mean-token-mean, seq-mean-token-sum or
    seq-mean-token-sum-norm (``tgpo_megatron.losses.aggregation``); None takes the algorithm's authors' choice
    (``Algorithm.loss_agg_mode``)."""
    loss_scale: str = "batch"
    """``batch``: the mini-batch's loss is exactly that of one big batch, whatever the packing and the ranks;
    ``micro-batch-sum``: the authors' scale, each micro-batch's loss summed over a rank's micro-batches and
    averaged over ranks (about k times larger, k the micro-batches per rank; docs/method.md §7), so that
    gradient clipping acts as in their runs."""
    topk: int = 100
    """K of tgpo_fwd_topk (the paper tried 5, 20 and 100; its scripts default to 100)."""
    chunk_tokens: int = CHUNK_TOKENS
    """Tokens per chunk of every pass's loss head (the student's loss and log-probs, the teacher's statistics,
    `tgpo sft`): its extra memory is about two [chunk, V/TP] fp32 buffers, which `tgpo plan` counts."""
    inplace_backward: bool = False
    """Write the logits gradient into the logits' own storage (saves a logits-sized tensor; the logits
    must not be a view nor be needed after backward, as in a Megatron forward_step)."""

    def __post_init__(self):
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"clip_eps={self.clip_eps} must be in (0, 1)")
        for name in ("entropy_coeff", "lambda_min", "kdrl_beta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.topk < 1 or self.chunk_tokens < 1:
            raise ValueError("topk and chunk_tokens must be >= 1")
        if self.loss_agg_mode is not None and self.loss_agg_mode not in LOSS_AGG_MODES:
            raise ValueError(f"loss_agg_mode={self.loss_agg_mode!r} must be one of {', '.join(LOSS_AGG_MODES)}")
        if self.loss_scale not in LOSS_SCALES:
            raise ValueError(f"loss_scale={self.loss_scale!r} must be one of {', '.join(LOSS_SCALES)}")

    def aggregation_mode(self, algorithm: str) -> str:
        """The loss aggregation ``algorithm`` runs with: the recipe's, else its authors' default."""
        return self.loss_agg_mode or ALGORITHMS[algorithm].loss_agg_mode

    def teacher_lambda(self, algorithm: str, step: int) -> float:
        """λ_k of ``algorithm``'s teacher term at step ``k`` (0 for algorithms without one)."""
        if ALGORITHMS[algorithm].default_lambda is None:
            return 0.0
        initial, decay = ALGORITHMS[algorithm].default_lambda
        initial = initial if self.lambda_init is None else self.lambda_init
        decay = decay if self.lambda_decay is None else self.lambda_decay
        return linear_decay(step, initial, decay, self.lambda_min)


CORRECTION_MODES = ("none", "tis", "mask", "sequence_mask")


@dataclass
class CorrectionConfig:
    """``rollout.correction``: how the policy-gradient term corrects for the engine's log-probs differing from
    the trainer's (docs/method.md §8; the weights: ``losses.correction``). Off by default, as in the paper."""

    mode: str = "none"
    """``none``, ``tis`` (weight min(r, C)), ``mask`` (drop tokens whose ratio leaves [lower, C]) or
    ``sequence_mask`` (drop rollouts whose geometric-mean ratio leaves [lower, C]); r = π_old / π_engine."""
    threshold: float = 2.0
    """C: the truncation of ``tis``, the upper bound of the masks."""
    lower: Optional[float] = None
    """The masks' lower bound (default 1/C); ``tis`` has none."""

    def __post_init__(self):
        if self.mode not in CORRECTION_MODES:
            raise ValueError(f"mode={self.mode!r} must be one of {', '.join(CORRECTION_MODES)}")
        if not self.threshold > 0:
            raise ValueError(f"threshold={self.threshold} must be > 0")
        if self.lower is not None:
            if self.mode == "tis":
                raise ValueError("lower: tis truncates from above only; leave lower unset")
            if not 0 <= self.lower < self.threshold:
                raise ValueError(f"lower={self.lower} must be in [0, threshold={self.threshold})")

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def band(self) -> tuple[float, float]:
        """The masks' [lower, upper] bounds on the ratio."""
        return (1.0 / self.threshold if self.lower is None else self.lower), self.threshold


def linear_decay(step: int, initial: float, decay: float, minimum: float = 0.0) -> float:
    """``λ_k = max(λ_0 - (k - 1) δ, λ_min)`` for training step ``k >= 1`` (docs/method.md §2.4)."""
    if step < 1:
        raise ValueError(f"training steps count from 1, got {step}")
    return max(initial - (step - 1) * decay, minimum)
