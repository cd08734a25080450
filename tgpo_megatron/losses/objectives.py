"""The objectives of docs/method.md as pure functions of per-token tensors, composed from small terms.

Every term is a masked token sum divided by ``normalizer`` (the number of valid tokens the loss is averaged
over; pass the global count of the optimizer step to make gradient accumulation and data parallelism give
the gradient of one big batch, docs/method.md §2.5). Shapes: ``[B, T]`` for per-token tensors, ``[B, T, K]``
for top-K ones; ``mask`` is 1 on response tokens (every generated token, EOS included) and 0 on padding.
Each function returns ``(loss, metrics)``; metrics are detached token means over ``mask``.
"""

from __future__ import annotations

import torch

Metrics = dict[str, torch.Tensor]


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
) -> tuple[torch.Tensor, Metrics]:
    """PPO-clip policy-gradient term (docs/method.md §2.3):
    ``-Σ_t m_t min(ρ_t A_t, clip(ρ_t, 1-ε, 1+ε) A_t) / N`` with ``ρ_t = exp(log π_θ(y_t) - log π_old(y_t))``.

    Metrics: ``loss/pg`` (this term's token mean), ``loss/pg_clipfrac`` (share of tokens where the clipped
    branch is active), ``loss/ppo_kl`` (mean of log π_old - log π_θ, the k1 estimate of KL(π_old || π_θ)).
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(unclipped, clipped)
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
# The algorithms. Inputs are the student's per-token statistics from the current logits plus batch tensors.
# --------------------------------------------------------------------------------------------------------


def grpo(logp, entropy, old_logp, advantages, mask, normalizer, *, clip_eps, entropy_coeff):
    """GRPO (§2.3): PPO-clip on the group-normalised outcome advantage, minus the entropy bonus."""
    return combine(
        ppo_clip(logp, old_logp, advantages, mask, normalizer, clip_eps),
        entropy_bonus(entropy, mask, normalizer, entropy_coeff),
    )


def tgpo_reg(
    logp, entropy, logp_teacher_token, old_logp, advantages, mask, normalizer, *, lam, clip_eps, entropy_coeff
):
    """TGPO (the paper's main method, §2.4): ``L_GRPO + λ_k L_TG - α H̄`` with ŷ_t the teacher's argmax.
    TGPO-MC (§6) is the same objective with ŷ_t sampled from the teacher."""
    return combine(
        grpo(logp, entropy, old_logp, advantages, mask, normalizer, clip_eps=clip_eps, entropy_coeff=entropy_coeff),
        teacher_cross_entropy(logp_teacher_token, mask, normalizer, lam),
    )


def tgpo_adv(
    logp, entropy, old_logp, old_logp_teacher_token, advantages, mask, normalizer, *, lam, clip_eps, entropy_coeff
):
    """TGPO-Adv (§6): PPO-clip on ``Â_t = A + λ_k π_old(ŷ_t | s_t)``, no cross-entropy term."""
    shaped = advantages + lam * torch.exp(old_logp_teacher_token)
    return grpo(logp, entropy, old_logp, shaped, mask, normalizer, clip_eps=clip_eps, entropy_coeff=entropy_coeff)


def tgpo_fwd_topk(
    logp,
    entropy,
    student_logp_topk,
    teacher_probs_topk,
    old_logp,
    advantages,
    mask,
    normalizer,
    *,
    lam,
    clip_eps,
    entropy_coeff,
):
    """TGPO forward-KL top-K (§6): GRPO plus ``λ_k`` times the soft forward KL on the teacher's top-K."""
    return combine(
        grpo(logp, entropy, old_logp, advantages, mask, normalizer, clip_eps=clip_eps, entropy_coeff=entropy_coeff),
        forward_kl_topk(student_logp_topk, teacher_probs_topk, mask, normalizer, lam),
    )


def rkl(logp, entropy, old_logp, teacher_logp, mask, normalizer, *, clip_eps, entropy_coeff):
    """RKL / on-policy distillation (§1): PPO-clip on the per-token ``A_t = log π_T(y_t) - log π_old(y_t)``;
    no outcome reward, no group normalisation."""
    return grpo(
        logp,
        entropy,
        old_logp,
        teacher_logp - old_logp,
        mask,
        normalizer,
        clip_eps=clip_eps,
        entropy_coeff=entropy_coeff,
    )


def kdrl(logp, entropy, teacher_logp, old_logp, advantages, mask, normalizer, *, beta, clip_eps, entropy_coeff):
    """KDRL (§6): GRPO plus ``β k2(π_θ || π_T)`` on the sampled tokens."""
    return combine(
        grpo(logp, entropy, old_logp, advantages, mask, normalizer, clip_eps=clip_eps, entropy_coeff=entropy_coeff),
        k2_kl(logp, teacher_logp, mask, normalizer, beta),
    )


def teacher_ce(logp_teacher_token, entropy, mask, normalizer, *, lam, entropy_coeff):
    """The teacher term alone, ``λ_k L_TG - α H̄`` with ŷ_t the teacher's argmax: on-policy distillation with no
    reward, the first phase of the sequential (distil, then GRPO) baseline."""
    return combine(
        teacher_cross_entropy(logp_teacher_token, mask, normalizer, lam),
        entropy_bonus(entropy, mask, normalizer, entropy_coeff),
    )


LUFFY_SHAPING = 0.1
"""γ of LUFFY's policy shaping f(p) = p / (p + γ) (the authors' ``off_policy_reshape=p_div_p_0.1``)."""


def luffy(logp, entropy, old_logp, advantages, off_policy, mask, normalizer, *, entropy_coeff):
    """LUFFY (§6): ``-A_i w_t`` per token, minus the entropy bonus, with ``w_t = π_θ(y_t) / π_old(y_t)`` on the
    student's own rollouts and the shaped probability ``f(π_θ(y_t)) = π_θ / (π_θ + γ)`` on the tokens of the
    dataset's off-policy trace (``off_policy`` = 1), which has no old policy. Neither is clipped: the authors'
    LUFFY script removes the clip (``loss_remove_clip``).

    Metrics: ``loss/pg``, ``loss/ppo_kl`` (on the on-policy tokens), ``loss/off_policy_prob`` (mean π_θ on the
    trace).
    """
    off = off_policy.to(mask.dtype) * mask
    on = mask - off
    prob = torch.exp(logp)
    weight = torch.where(off.bool(), prob / (prob + LUFFY_SHAPING), torch.exp(logp - old_logp))
    per_token = -advantages * weight
    pg = (
        (per_token * mask).sum() / normalizer,
        {
            "loss/pg": _mean(per_token, mask),
            "loss/ppo_kl": _mean(old_logp - logp, on),
            "loss/off_policy_prob": _mean(prob, off),
        },
    )
    return combine(pg, entropy_bonus(entropy, mask, normalizer, entropy_coeff))


# --------------------------------------------------------------------------------------------------------
# The registry's entry points (losses/registry.py names them): the student's terms ``s`` (``logp`` of the
# sampled tokens, ``extra`` log-probs of the ids in ``Algorithm.logp_of``, entropy, mask, normalizer), the batch
# ``b``, the coefficients ``c`` (LossConfig) and λ_k.
# --------------------------------------------------------------------------------------------------------


def grpo_from_batch(s, b, c, lam):
    return grpo(
        s.logp,
        s.entropy,
        b["old_logp"],
        b["advantages"],
        s.mask,
        s.normalizer,
        clip_eps=c.clip_eps,
        entropy_coeff=c.entropy_coeff,
    )


def teacher_token_from_batch(s, b, c, lam):
    """tgpo_reg and tgpo_mc: the teacher's token (argmax or sampled) is the second id tensor."""
    return tgpo_reg(
        s.logp,
        s.entropy,
        s.extra[0],
        b["old_logp"],
        b["advantages"],
        s.mask,
        s.normalizer,
        lam=lam,
        clip_eps=c.clip_eps,
        entropy_coeff=c.entropy_coeff,
    )


def tgpo_adv_from_batch(s, b, c, lam):
    return tgpo_adv(
        s.logp,
        s.entropy,
        b["old_logp"],
        b["old_logp_teacher_ids"],
        b["advantages"],
        s.mask,
        s.normalizer,
        lam=lam,
        clip_eps=c.clip_eps,
        entropy_coeff=c.entropy_coeff,
    )


def tgpo_fwd_topk_from_batch(s, b, c, lam):
    return tgpo_fwd_topk(
        s.logp,
        s.entropy,
        torch.stack(s.extra, dim=-1),
        b["teacher_topk_probs"],
        b["old_logp"],
        b["advantages"],
        s.mask,
        s.normalizer,
        lam=lam,
        clip_eps=c.clip_eps,
        entropy_coeff=c.entropy_coeff,
    )


def rkl_from_batch(s, b, c, lam):
    return rkl(
        s.logp,
        s.entropy,
        b["old_logp"],
        b["teacher_logp"],
        s.mask,
        s.normalizer,
        clip_eps=c.clip_eps,
        entropy_coeff=c.entropy_coeff,
    )


def kdrl_from_batch(s, b, c, lam):
    return kdrl(
        s.logp,
        s.entropy,
        b["teacher_logp"],
        b["old_logp"],
        b["advantages"],
        s.mask,
        s.normalizer,
        beta=c.kdrl_beta,
        clip_eps=c.clip_eps,
        entropy_coeff=c.entropy_coeff,
    )


def teacher_ce_from_batch(s, b, c, lam):
    return teacher_ce(s.extra[0], s.entropy, s.mask, s.normalizer, lam=lam, entropy_coeff=c.entropy_coeff)


def luffy_from_batch(s, b, c, lam):
    return luffy(
        s.logp,
        s.entropy,
        b["old_logp"],
        b["advantages"],
        b["off_policy"],
        s.mask,
        s.normalizer,
        entropy_coeff=c.entropy_coeff,
    )
