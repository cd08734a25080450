"""The weights of the importance-sampling correction of the rollout engine's mismatch with the trainer
(``rollout.correction``; the modes, their formulas and where they apply: docs/method.md §8).

With ``r_t = π_old(y_t) / π_engine(y_t)``, both log-probs constants of the step, the weights depend on nothing
else, so they are computed once per rollout where both are known (after the old-log-prob pass), identically on
every rank of a student replica whatever the packing, TP, PP or DP; the loss head multiplies them into the
policy-gradient term (``objectives.ppo_clip``, ``objectives.luffy``).
"""

from __future__ import annotations

import torch

from tgpo_megatron.losses.coefficients import CorrectionConfig

MAXIMA = ("weight_max",)
"""The stats of ``correction_weights`` that merge over rollouts and ranks by their maximum (the others add up)."""


def correction_weights(
    engine_logp: torch.Tensor, old_logp: torch.Tensor, config: CorrectionConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """``(w, stats)`` for one rollout's generated tokens (``[L]`` log-probs): w ``[L]`` float32, computed in
    float64, and the sums the step's metrics are made of (``correction_metrics``)."""
    log_ratio = old_logp.to(torch.float64) - engine_logp.to(torch.float64)
    ratio = torch.exp(log_ratio)
    lower, upper = config.band
    dropped = False
    if config.mode == "tis":
        weight = torch.clamp(ratio, max=upper)
        changed = ratio > upper
    elif config.mode == "mask":
        changed = (ratio < lower) | (ratio > upper)
        weight = (~changed).to(torch.float64)
    elif config.mode == "sequence_mask":
        geometric = torch.exp(log_ratio.mean()) if log_ratio.numel() else None  # an empty rollout drops nothing
        dropped = geometric is not None and bool(geometric < lower or geometric > upper)
        changed = torch.full_like(ratio, dropped, dtype=torch.bool)
        weight = (~changed).to(torch.float64)
    else:
        raise ValueError(f"rollout.correction.mode={config.mode!r} corrects nothing")
    stats = {
        "tokens": float(ratio.numel()),
        "sequences": 1.0,
        "weight_sum": float(weight.sum()),
        "weight_max": float(weight.max()) if weight.numel() else 0.0,
        "tokens_changed": float(changed.sum()),
        "sequences_masked": float(dropped),
    }
    return weight.to(torch.float32), stats


def correction_metrics(total: dict[str, float], mode: str) -> dict[str, float]:
    """The step's ``correction/*`` metrics from its rollouts' stats, merged (``MAXIMA`` by their maximum)."""
    tokens, sequences = max(total.get("tokens", 0.0), 1.0), max(total.get("sequences", 0.0), 1.0)
    metrics = {
        "correction/weight_mean": total.get("weight_sum", 0.0) / tokens,
        "correction/weight_max": total.get("weight_max", 0.0),
        "correction/token_share_changed": total.get("tokens_changed", 0.0) / tokens,
    }
    if mode == "sequence_mask":
        metrics["correction/sequence_share_masked"] = total.get("sequences_masked", 0.0) / sequences
    return metrics
