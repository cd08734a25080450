"""The drift gate: how far the rollout engine's log-probabilities are from the trainer's for the same tokens.

A refit that silently failed, a dtype or kernel mismatch, or a vocabulary padded differently shows up here
first. ``rollout/token_mult_prob_error`` is NeMo-RL's metric (mean over tokens of exp|Δ log p|; 1.0 is
perfect), so numbers compare across the two systems.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def logprob_drift(engine_logp: torch.Tensor, trainer_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Masked means over response tokens (any matching shapes) of |Δ log p|, exp|Δ log p| and the k3 estimate
    of KL(engine ‖ trainer), ``r - 1 - log r`` with ``r = π_trainer / π_engine`` on the engine's samples."""
    mask = mask.to(torch.float64)
    log_ratio = trainer_logp.to(torch.float64) - engine_logp.to(torch.float64)
    diff = log_ratio.abs() * mask
    k3 = torch.expm1(log_ratio) - log_ratio
    count = mask.sum().clamp(min=1.0)
    return {
        "rollout/logprob_abs_diff": float(diff.sum() / count),
        "rollout/token_mult_prob_error": float((torch.exp(diff) * mask).sum() / count),
        "rollout/kl_k3": float((k3 * mask).sum() / count),
    }


def check_drift(metrics: dict[str, float], warn_threshold: float, stale: bool = False) -> bool:
    """Log a warning when ``rollout/token_mult_prob_error`` exceeds ``warn_threshold``; True if it did.
    ``stale``: the rollouts were generated an update before the trainer's weights (``rollout.max_staleness``),
    so the drift also holds that update's change of the policy."""
    error = metrics["rollout/token_mult_prob_error"]
    if error > warn_threshold:
        log.warning(
            "rollout/training log-prob drift: token_mult_prob_error %.4f > %.4f (mean |Δlogp| %.2e); %s",
            error,
            warn_threshold,
            metrics["rollout/logprob_abs_diff"],
            "the rollouts are one update old, so this includes the update's own change of the policy: a smaller "
            "learning rate, or rollout.correction, bounds it"
            if stale
            else "check the refit, dtypes and the vocabulary padding",
        )
        return True
    return False
