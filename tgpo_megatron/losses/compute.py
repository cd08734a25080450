"""``compute_loss``: any objective of the paper from this rank's vocabulary shard of the logits."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from tgpo_megatron.losses import objectives
from tgpo_megatron.losses.coefficients import ALGORITHM_NAMES, LossConfig
from tgpo_megatron.losses.vocab_parallel import _tp_size, token_stats


def _sampled(batch):
    return [batch["labels"]]


def _with_teacher_argmax(batch):
    return [batch["labels"], batch["teacher_ids"]]


def _with_teacher_sample(batch):
    return [batch["labels"], batch["teacher_sampled_ids"]]


def _with_teacher_topk(batch):
    return [batch["labels"], *batch["teacher_topk_ids"].unbind(-1)]


@dataclass(frozen=True)
class Algorithm:
    """Everything the loop needs to know about an objective; nothing outside this registry reads its name."""

    objective: Callable
    """``(student terms, batch, LossConfig, λ_k) -> (loss, metrics)``."""
    needs: tuple[str, ...] = ("advantages",)
    """Batch keys the objective reads beyond labels, loss_mask and old_logp: ``advantages`` (per rollout) and
    per-token values (``batching.PER_TOKEN``)."""
    ids: Callable[[dict], list] = _sampled
    """Which id tensors the student's log-probs are needed for (the first is always the sampled token)."""
    teacher: tuple[str, ...] = ()
    """What the teacher computes per response token, beyond its argmax ŷ_t and log π_T(y_t) (always, for the
    gap probes): ``sampled`` (an id drawn at ``teacher_sample_temperature``), ``topk``. Empty with no
    ``teacher_*`` key in ``needs``: no teacher."""
    old_logp_of: tuple[str, ...] = ()
    """Id keys whose log π_old the student computes before the update, stored as ``old_logp_<key>``."""
    off_policy_traces: bool = False
    """One rollout of each group is the dataset's reference response (``off_policy`` marks its tokens)."""

    @property
    def uses_teacher(self) -> bool:
        return any(key.startswith("teacher_") for key in self.needs) or bool(self.old_logp_of)

    @property
    def per_token_keys(self) -> list[str]:
        """The rollouts' per-token values a training micro-batch carries (the advantage is per rollout)."""
        return ["old_logp", *[key for key in self.needs if key != "advantages"]]


# The objectives' adapters: student terms ``s`` (log-probs of ``ids``, entropy, mask, normalizer), the batch
# ``b``, the coefficients ``c`` and λ_k.


def _grpo(s, b, c, lam):
    return objectives.grpo(
        s.logp,
        s.entropy,
        b["old_logp"],
        b["advantages"],
        s.mask,
        s.normalizer,
        clip_eps=c.clip_eps,
        entropy_coeff=c.entropy_coeff,
    )


def _teacher_token_ce(s, b, c, lam):
    """tgpo_reg and tgpo_mc: the teacher's token (argmax or sampled) is the second id tensor."""
    return objectives.tgpo_reg(
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


def _tgpo_adv(s, b, c, lam):
    return objectives.tgpo_adv(
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


def _tgpo_fwd_topk(s, b, c, lam):
    return objectives.tgpo_fwd_topk(
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


def _rkl(s, b, c, lam):
    return objectives.rkl(
        s.logp,
        s.entropy,
        b["old_logp"],
        b["teacher_logp"],
        s.mask,
        s.normalizer,
        clip_eps=c.clip_eps,
        entropy_coeff=c.entropy_coeff,
    )


def _kdrl(s, b, c, lam):
    return objectives.kdrl(
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


def _luffy(s, b, c, lam):
    return objectives.luffy(
        s.logp,
        s.entropy,
        b["old_logp"],
        b["advantages"],
        b["off_policy"],
        s.mask,
        s.normalizer,
        entropy_coeff=c.entropy_coeff,
    )


ALGORITHMS: dict[str, Algorithm] = {
    "grpo": Algorithm(_grpo),
    "tgpo_reg": Algorithm(_teacher_token_ce, ("advantages", "teacher_ids"), _with_teacher_argmax),
    "tgpo_mc": Algorithm(
        _teacher_token_ce, ("advantages", "teacher_sampled_ids"), _with_teacher_sample, teacher=("sampled",)
    ),
    "tgpo_adv": Algorithm(_tgpo_adv, ("advantages", "old_logp_teacher_ids"), old_logp_of=("teacher_ids",)),
    "tgpo_fwd_topk": Algorithm(
        _tgpo_fwd_topk, ("advantages", "teacher_topk_ids", "teacher_topk_probs"), _with_teacher_topk, teacher=("topk",)
    ),
    "rkl": Algorithm(_rkl, ("teacher_logp",)),
    "kdrl": Algorithm(_kdrl, ("advantages", "teacher_logp")),
    "luffy": Algorithm(_luffy, ("advantages", "off_policy"), off_policy_traces=True),
}

if tuple(ALGORITHMS) != ALGORITHM_NAMES:  # the names a recipe may use are kept where torch is not needed
    raise ImportError(f"ALGORITHM_NAMES {ALGORITHM_NAMES} and the registry {tuple(ALGORITHMS)} differ")


@dataclass
class _StudentTerms:
    logp: torch.Tensor
    entropy: torch.Tensor
    extra: list
    mask: torch.Tensor
    normalizer: torch.Tensor


def compute_loss(
    algorithm: str,
    logits: torch.Tensor,
    batch: dict,
    *,
    step: int,
    config: LossConfig,
    tp_group=None,
    vocab_size: Optional[int] = None,
    normalizer=None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of ``algorithm`` for one micro-batch, from this rank's vocabulary shard of the logits.

    Args:
        algorithm: one of ``ALGORITHMS`` (grpo, tgpo_reg, tgpo_mc, tgpo_adv, tgpo_fwd_topk, rkl, kdrl, luffy).
        logits: ``[B, T, V/TP]`` logits at the response positions: ``logits[:, t]`` predicts ``labels[:, t]``.
        batch: ``labels`` y_t ``[B, T]``, ``loss_mask`` ``[B, T]``, ``old_logp`` log π_old(y_t), and as the
            algorithm needs: ``advantages`` (``[B]`` per rollout or ``[B, T]``), ``teacher_ids`` ŷ_t (argmax),
            ``teacher_sampled_ids``, ``teacher_logp`` log π_T(y_t), ``old_logp_teacher_ids`` log π_old(ŷ_t),
            ``teacher_topk_ids``/``teacher_topk_probs`` ``[B, T, K]``, ``off_policy`` (1 on an off-policy trace).
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
    if "labels" not in batch and "tokens" in batch:
        warnings.warn(
            "compute_loss: the batch key 'tokens' is now 'labels' (y_t, the token each position "
            "predicts); 'tokens' is read until the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        batch = {**batch, "labels": batch["tokens"]}
    missing = [k for k in ("labels", "loss_mask", "old_logp", *spec.needs) if k not in batch]
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
    logps, entropy = token_stats(
        logits,
        ids,
        vocab_size=vocab_size,
        tp_group=tp_group,
        chunk_tokens=config.chunk_tokens,
        inplace_backward=config.inplace_backward,
    )
    if normalizer is None:
        normalizer = mask.sum().clamp(min=1)
    terms = _StudentTerms(logps[0], entropy, logps[1:], mask, normalizer)
    lam = config.teacher_lambda(algorithm, step)
    loss, metrics = spec.objective(terms, batch, config, lam)
    return loss, metrics
