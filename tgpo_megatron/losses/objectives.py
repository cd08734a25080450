"""The objectives of docs/method.md as pure functions of per-token tensors, composed from small terms.

Every term is a masked token sum divided by ``normalizer`` (the number of valid tokens the loss is averaged
over; pass the global count of the optimizer step to make gradient accumulation and data parallelism give
the gradient of one big batch, docs/method.md §2.5). Shapes: ``[B, T]`` for per-token tensors, ``[B, T, K]``
for top-K ones; ``mask`` is 1 on response tokens (every generated token, EOS included) and 0 on padding.
Each function returns ``(loss, metrics)``; metrics are detached token means over ``mask``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from tgpo_megatron.losses.coefficients import LossConfig

Metrics = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Terms:
    """What an objective reads: the student's statistics from the current logits (``compute_loss``) and the
    micro-batch's values. Per-token tensors are ``[B, T]``."""

    logp: torch.Tensor
    """log π_θ(y_t) of the sampled tokens."""
    entropy: torch.Tensor
    mask: torch.Tensor
    normalizer: torch.Tensor
    """The token count every term's masked sum is divided by."""
    logp_of: list[torch.Tensor]
    """log π_θ of the ids the algorithm's ``Algorithm.logp_of`` names, in order (K for a ``[B, T, K]`` id key)."""
    batch: dict[str, torch.Tensor]
    """``old_logp``, ``advantages`` (``[B, T]``) and the per-token values of ``batching.PER_TOKEN``."""
    entropy_mask: torch.Tensor
    """The entropy bonus's token weights (the loss aggregation's, ``losses.aggregation``)."""

    @property
    def old_logp(self) -> torch.Tensor:
        return self.batch["old_logp"]

    @property
    def advantages(self) -> torch.Tensor:
        return self.batch["advantages"]

    @property
    def correction(self) -> Optional[torch.Tensor]:
        """The engine-mismatch correction's weight per token (``rollout.correction``), None when off."""
        return self.batch.get("correction_weight")


def _mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Detached token mean for metrics (0 when nothing is valid)."""
    return ((x * mask).sum() / mask.sum().clamp(min=1)).detach()


def ppo_clip(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    normalizer,
    clip_eps: float = 0.2,
    correction: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, Metrics]:
    """PPO-clip policy-gradient term (docs/method.md §2.3):
    ``-Σ_t m_t w_t min(ρ_t A_t, clip(ρ_t, 1-ε, 1+ε) A_t) / N`` with ``ρ_t = exp(log π_θ(y_t) - log π_old(y_t))``
    and w_t the engine-mismatch correction's constant weight (``correction``; §8), 1 without one.

    Metrics: ``loss/pg`` (this term's token mean), ``loss/pg_clipfrac`` (share of tokens where the clipped
    branch is active), ``loss/ppo_kl`` (mean of log π_old - log π_θ, the k1 estimate of KL(π_old || π_θ)).
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(unclipped, clipped)
    if correction is not None:
        per_token = per_token * correction
    return (per_token * mask).sum() / normalizer, {
        "loss/pg": _mean(per_token, mask),
        "loss/pg_clipfrac": _mean((clipped > unclipped).float(), mask),
        "loss/ppo_kl": _mean(-log_ratio, mask),
    }


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor, normalizer, coeff: float) -> tuple[torch.Tensor, Metrics]:
    """``-α H̄``: the token-mean entropy of the student on its own rollouts, as a bonus (§2.4)."""
    return -coeff * (entropy * mask).sum() / normalizer, {"loss/entropy": _mean(entropy, mask)}


def teacher_cross_entropy(
    logp_teacher_token: torch.Tensor, mask: torch.Tensor, normalizer, lam: float
) -> tuple[torch.Tensor, Metrics]:
    """``λ_k L_TG`` with ``L_TG = -Σ_t m_t log π_θ(ŷ_t | s_t) / N`` (§2.2): pathwise, no ratio, no clip;
    the teacher's tokens are constants."""
    nll = -logp_teacher_token
    return lam * (nll * mask).sum() / normalizer, {"loss/teacher_ce": _mean(nll, mask)}


def forward_kl_topk(
    student_logp_topk: torch.Tensor, teacher_probs_topk: torch.Tensor, mask: torch.Tensor, normalizer, lam: float
) -> tuple[torch.Tensor, Metrics]:
    """``λ Σ_{v∈TopK_T} p̃_T(v) [log p̃_T(v) - log π_θ(v|s_t)]`` per token (§6): soft forward KL on the
    teacher's renormalised top-K; the student's log-probs are full-vocabulary values."""
    p = teacher_probs_topk
    kl = (p * (torch.log(p.clamp(min=1e-30)) - student_logp_topk)).sum(dim=-1)
    return lam * (kl * mask).sum() / normalizer, {"loss/teacher_fkl_topk": _mean(kl, mask)}


def k2_kl(
    logp: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor, normalizer, beta: float
) -> tuple[torch.Tensor, Metrics]:
    """KDRL's ``β ½ (log π_T(y_t) - log π_θ(y_t))²`` on the sampled tokens (§6, the corrected k2 form)."""
    k2 = 0.5 * (teacher_logp - logp) ** 2
    return beta * (k2 * mask).sum() / normalizer, {"loss/kl_k2": _mean(k2, mask)}


def combine(*terms: tuple[torch.Tensor, Metrics]) -> tuple[torch.Tensor, Metrics]:
    loss = sum(term[0] for term in terms)
    metrics: Metrics = {}
    for _, m in terms:
        metrics.update(m)
    return loss, metrics


# --------------------------------------------------------------------------------------------------------
# The algorithms: ``(terms, coefficients, λ_k) -> (loss, metrics)``, each named by its line of the registry
# (losses/registry.py says which batch values and log-probs it reads).
# --------------------------------------------------------------------------------------------------------


def grpo(t: Terms, c: LossConfig, lam: float) -> tuple[torch.Tensor, Metrics]:
    """GRPO (§2.3): PPO-clip on the group-normalised outcome advantage, minus the entropy bonus."""
    return combine(
        ppo_clip(t.logp, t.old_logp, t.advantages, t.mask, t.normalizer, c.clip_eps, t.correction),
        entropy_bonus(t.entropy, t.entropy_mask, t.normalizer, c.entropy_coeff),
    )


def tgpo_reg(t: Terms, c: LossConfig, lam: float) -> tuple[torch.Tensor, Metrics]:
    """TGPO (the paper's main method, §2.4): ``L_GRPO + λ_k L_TG - α H̄`` with ŷ_t the teacher's argmax.
    TGPO-MC (§6) is the same objective with ŷ_t sampled from the teacher: either is the first extra log-prob."""
    return combine(grpo(t, c, lam), teacher_cross_entropy(t.logp_of[0], t.mask, t.normalizer, lam))


def tgpo_adv(t: Terms, c: LossConfig, lam: float) -> tuple[torch.Tensor, Metrics]:
    """TGPO-Adv (§6): PPO-clip on ``Â_t = A + λ_k π_old(ŷ_t | s_t)``, no cross-entropy term."""
    shaped = t.advantages + lam * torch.exp(t.batch["old_logp_teacher_ids"])
    return grpo(replace(t, batch={**t.batch, "advantages": shaped}), c, lam)


def tgpo_fwd_topk(t: Terms, c: LossConfig, lam: float) -> tuple[torch.Tensor, Metrics]:
    """TGPO forward-KL top-K (§6): GRPO plus ``λ_k`` times the soft forward KL on the teacher's top-K."""
    student_logp_topk = torch.stack(t.logp_of, dim=-1)
    return combine(
        grpo(t, c, lam),
        forward_kl_topk(student_logp_topk, t.batch["teacher_topk_probs"], t.mask, t.normalizer, lam),
    )


def rkl(t: Terms, c: LossConfig, lam: float) -> tuple[torch.Tensor, Metrics]:
    """RKL / on-policy distillation (§1): PPO-clip on the per-token ``A_t = log π_T(y_t) - log π_old(y_t)``;
    no outcome reward, no group normalisation."""
    per_token_advantage = t.batch["teacher_logp"] - t.old_logp
    return grpo(replace(t, batch={**t.batch, "advantages": per_token_advantage}), c, lam)


def kdrl(t: Terms, c: LossConfig, lam: float) -> tuple[torch.Tensor, Metrics]:
    """KDRL (§6): GRPO plus ``β k2(π_θ || π_T)`` on the sampled tokens."""
    return combine(grpo(t, c, lam), k2_kl(t.logp, t.batch["teacher_logp"], t.mask, t.normalizer, c.kdrl_beta))


def teacher_ce(t: Terms, c: LossConfig, lam: float) -> tuple[torch.Tensor, Metrics]:
    """The teacher term alone, ``λ_k L_TG - α H̄`` with ŷ_t the teacher's argmax: on-policy distillation with no
    reward, the first phase of the sequential (distil, then GRPO) baseline."""
    return combine(
        teacher_cross_entropy(t.logp_of[0], t.mask, t.normalizer, lam),
        entropy_bonus(t.entropy, t.entropy_mask, t.normalizer, c.entropy_coeff),
    )


LUFFY_SHAPING = 0.1
"""γ of LUFFY's policy shaping f(p) = p / (p + γ) (the authors' ``off_policy_reshape=p_div_p_0.1``)."""


def luffy(t: Terms, c: LossConfig, lam: float) -> tuple[torch.Tensor, Metrics]:
    """LUFFY (§6): ``-A_i w_t`` per token, minus the entropy bonus, with ``w_t = π_θ(y_t) / π_old(y_t)`` on the
    student's own rollouts and the shaped probability ``f(π_θ(y_t)) = π_θ / (π_θ + γ)`` on the tokens of the
    dataset's off-policy trace (``off_policy`` = 1), which has no old policy. Neither is clipped: the authors'
    LUFFY script removes the clip (``loss_remove_clip``). The engine-mismatch correction weighs the rollouts'
    tokens only.

    Metrics: ``loss/pg``, ``loss/ppo_kl`` (on the on-policy tokens), ``loss/off_policy_prob`` (mean π_θ on the
    trace).
    """
    off = t.batch["off_policy"].to(t.mask.dtype) * t.mask
    on = t.mask - off
    prob = torch.exp(t.logp)
    weight = torch.where(off.bool(), prob / (prob + LUFFY_SHAPING), torch.exp(t.logp - t.old_logp))
    if t.correction is not None:  # 1 on the trace's tokens, which the engine did not generate
        weight = weight * t.correction
    per_token = -t.advantages * weight
    pg = (
        (per_token * t.mask).sum() / t.normalizer,
        {
            "loss/pg": _mean(per_token, t.mask),
            "loss/ppo_kl": _mean(t.old_logp - t.logp, on),
            "loss/off_policy_prob": _mean(prob, off),
        },
    )
    return combine(pg, entropy_bonus(t.entropy, t.entropy_mask, t.normalizer, c.entropy_coeff))
