"""The TGPO objective library: every objective of the paper on vocabulary-parallel logits.

A Megatron user calls ``compute_loss`` from the loss function of their ``forward_step`` with this rank's
vocabulary shard of the logits; full logits are never gathered.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from tgpo_megatron.losses import objectives
from tgpo_megatron.losses.advantages import grpo_advantages, linear_decay
from tgpo_megatron.losses.vocab_parallel import TeacherStats, _tp_size, teacher_stats, token_stats

__all__ = ["ALGORITHMS", "LossConfig", "compute_loss", "grpo_advantages", "linear_decay", "teacher_stats",
           "token_stats", "TeacherStats"]

# The paper's coefficients (tgpo_method.md §2.4 and §4): λ0 and the per-step decay δ of each teacher term.
PAPER_LAMBDA = {"tgpo_reg": (0.002, 1e-5), "tgpo_mc": (0.002, 1e-5), "tgpo_fwd_topk": (0.002, 1e-5),
                "tgpo_adv": (0.02, 1e-4)}


@dataclass(frozen=True)
class LossConfig:
    """Loss coefficients; the defaults are the paper's (tgpo_method.md §2.4, §4)."""

    clip_eps: float = 0.2
    """PPO clip range ε (symmetric)."""
    entropy_coeff: float = 1e-3
    """α, the entropy-bonus coefficient."""
    lambda_init: Optional[float] = None
    """λ0 of the teacher term; None takes the paper's value for the algorithm (0.002, or 0.02 for tgpo_adv)."""
    lambda_decay: Optional[float] = None
    """δ, the linear decay of λ per step; None takes the paper's value (1e-5, or 1e-4 for tgpo_adv)."""
    lambda_min: float = 0.0
    """The floor λ decays to."""
    kdrl_beta: float = 0.002
    """β of KDRL's k2 term (not decayed)."""
    topk: int = 20
    """K of tgpo_fwd_topk (the paper tried 5, 20 and 100)."""
    chunk_tokens: int = 256
    """Tokens per chunk of the fused loss head (its extra memory is about two [chunk, V/TP] fp32 buffers)."""
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

    def teacher_lambda(self, algorithm: str, step: int) -> float:
        """λ_k of ``algorithm``'s teacher term at step ``k`` (0 for algorithms without one)."""
        if algorithm not in PAPER_LAMBDA:
            return 0.0
        initial, decay = PAPER_LAMBDA[algorithm]
        initial = initial if self.lambda_init is None else self.lambda_init
        decay = decay if self.lambda_decay is None else self.lambda_decay
        return linear_decay(step, initial, decay, self.lambda_min)


@dataclass(frozen=True)
class Algorithm:
    needs: tuple[str, ...]
    """Batch keys beyond tokens, loss_mask and old_logp."""
    ids: Callable[[dict], list]
    """Which id tensors the student's log-probs are needed for (the first is always the sampled token)."""
    objective: Callable


def _sampled(batch):
    return [batch["tokens"]]


def _topk_ids(batch):
    return [batch["tokens"], *batch["teacher_topk_ids"].unbind(-1)]


ALGORITHMS: dict[str, Algorithm] = {
    "grpo": Algorithm(("advantages",), _sampled, lambda s, b, c, lam: objectives.grpo(
        s.logp, s.entropy, b["old_logp"], b["advantages"], s.mask, s.normalizer, clip_eps=c.clip_eps,
        entropy_coeff=c.entropy_coeff)),
    "tgpo_reg": Algorithm(("advantages", "teacher_ids"), lambda b: [b["tokens"], b["teacher_ids"]],
                          lambda s, b, c, lam: objectives.tgpo_reg(
        s.logp, s.entropy, s.extra[0], b["old_logp"], b["advantages"], s.mask, s.normalizer, lam=lam,
        clip_eps=c.clip_eps, entropy_coeff=c.entropy_coeff)),
    "tgpo_mc": Algorithm(("advantages", "teacher_sampled_ids"), lambda b: [b["tokens"], b["teacher_sampled_ids"]],
                         lambda s, b, c, lam: objectives.tgpo_reg(
        s.logp, s.entropy, s.extra[0], b["old_logp"], b["advantages"], s.mask, s.normalizer, lam=lam,
        clip_eps=c.clip_eps, entropy_coeff=c.entropy_coeff)),
    "tgpo_adv": Algorithm(("advantages", "old_logp_teacher_ids"), _sampled, lambda s, b, c, lam: objectives.tgpo_adv(
        s.logp, s.entropy, b["old_logp"], b["old_logp_teacher_ids"], b["advantages"], s.mask, s.normalizer,
        lam=lam, clip_eps=c.clip_eps, entropy_coeff=c.entropy_coeff)),
    "tgpo_fwd_topk": Algorithm(("advantages", "teacher_topk_ids", "teacher_topk_probs"), _topk_ids,
                               lambda s, b, c, lam: objectives.tgpo_fwd_topk(
        s.logp, s.entropy, torch.stack(s.extra, dim=-1), b["teacher_topk_probs"], b["old_logp"], b["advantages"],
        s.mask, s.normalizer, lam=lam, clip_eps=c.clip_eps, entropy_coeff=c.entropy_coeff)),
    "rkl": Algorithm(("teacher_logp",), _sampled, lambda s, b, c, lam: objectives.rkl(
        s.logp, s.entropy, b["old_logp"], b["teacher_logp"], s.mask, s.normalizer, clip_eps=c.clip_eps,
        entropy_coeff=c.entropy_coeff)),
    "kdrl": Algorithm(("advantages", "teacher_logp"), _sampled, lambda s, b, c, lam: objectives.kdrl(
        s.logp, s.entropy, b["teacher_logp"], b["old_logp"], b["advantages"], s.mask, s.normalizer,
        beta=c.kdrl_beta, clip_eps=c.clip_eps, entropy_coeff=c.entropy_coeff)),
}


@dataclass
class _StudentTerms:
    logp: torch.Tensor
    entropy: torch.Tensor
    extra: list
    mask: torch.Tensor
    normalizer: torch.Tensor


def compute_loss(algorithm: str, logits: torch.Tensor, batch: dict, *, step: int, config: LossConfig,
                 tp_group=None, vocab_size: Optional[int] = None, normalizer=None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of ``algorithm`` for one micro-batch, from this rank's vocabulary shard of the logits.

    Args:
        algorithm: one of ``ALGORITHMS`` (grpo, tgpo_reg, tgpo_mc, tgpo_adv, tgpo_fwd_topk, rkl, kdrl).
        logits: ``[B, T, V/TP]`` logits at the response positions: ``logits[:, t]`` predicts ``tokens[:, t]``.
        batch: ``tokens`` y_t ``[B, T]``, ``loss_mask`` ``[B, T]``, ``old_logp`` log π_old(y_t), and as the
            algorithm needs: ``advantages`` (``[B]`` per rollout or ``[B, T]``), ``teacher_ids`` ŷ_t (argmax),
            ``teacher_sampled_ids``, ``teacher_logp`` log π_T(y_t), ``old_logp_teacher_ids`` log π_old(ŷ_t),
            ``teacher_topk_ids``/``teacher_topk_probs`` ``[B, T, K]``.
        step: the training step k (from 1) that sets λ_k.
        tp_group: the group the vocabulary is sharded over (None: unsharded logits).
        vocab_size: the real vocabulary size when the logits carry TP padding (default: no padding).
        normalizer: the token count the loss is averaged over; pass the step's global count (summed over
            micro-batches and all-reduced over DP) so that accumulation equals one big batch. Default: the
            valid tokens of this micro-batch.
    Returns:
        ``(loss, metrics)``; ``loss`` is differentiable w.r.t. ``logits``.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}")
    spec = ALGORITHMS[algorithm]
    missing = [k for k in ("tokens", "loss_mask", "old_logp", *spec.needs) if k not in batch]
    if missing:
        raise KeyError(f"algorithm {algorithm!r} needs batch keys {missing}")
    batch = dict(batch)
    mask = batch["loss_mask"].to(logits.device, torch.float32)
    if batch.get("advantages") is not None and batch["advantages"].dim() == 1:
        batch["advantages"] = batch["advantages"][:, None].expand_as(mask)
    if vocab_size is None:
        vocab_size = logits.shape[-1] * _tp_size(tp_group)
    # Ids at padded positions carry anything (pad ids, -100): they are replaced, their terms are masked out.
    ids = [torch.where(mask.bool(), i, 0) for i in spec.ids(batch)]
    logps, entropy = token_stats(logits, ids, vocab_size=vocab_size, tp_group=tp_group,
                                 chunk_tokens=config.chunk_tokens, inplace_backward=config.inplace_backward)
    if normalizer is None:
        normalizer = mask.sum().clamp(min=1)
    terms = _StudentTerms(logps[0], entropy, logps[1:], mask, normalizer)
    lam = config.teacher_lambda(algorithm, step)
    loss, metrics = spec.objective(terms, batch, config, lam)
    metrics["lambda"] = torch.tensor(lam, dtype=torch.float64)
    metrics.update(objectives.gap_probes(batch["old_logp"], mask, batch.get("teacher_logp"), batch["tokens"],
                                         batch.get("teacher_ids")))
    return loss, metrics
