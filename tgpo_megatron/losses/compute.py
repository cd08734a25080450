"""``compute_loss``: any objective of the paper from this rank's vocabulary shard of the logits."""

from __future__ import annotations

from typing import Optional

import torch

from tgpo_megatron.losses import objectives
from tgpo_megatron.losses.coefficients import LossConfig
from tgpo_megatron.losses.registry import ALGORITHMS
from tgpo_megatron.losses.vocab_parallel import _tp_size, token_stats


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
        algorithm: a name in ``losses.registry.ALGORITHMS``.
        logits: ``[B, T, V/TP]`` logits at the response positions: ``logits[:, t]`` predicts ``labels[:, t]``.
        batch: ``labels`` y_t ``[B, T]``, ``loss_mask`` ``[B, T]``, ``old_logp`` log π_old(y_t), and as the
            algorithm needs: ``advantages`` (``[B]`` per rollout or ``[B, T]``), ``teacher_ids`` ŷ_t (argmax),
            ``teacher_sampled_ids``, ``teacher_logp`` log π_T(y_t), ``old_logp_teacher_ids`` log π_old(ŷ_t),
            ``teacher_topk_ids``/``teacher_topk_probs`` ``[B, T, K]``, ``off_policy`` (1 on an off-policy trace),
            ``entropy_weight`` (the entropy bonus's token weights where they are not ``loss_mask``'s).
        step: the training step k (from 1) that sets λ_k.
        tp_group: the group the vocabulary is sharded over (None: unsharded logits).
        vocab_size: the real vocabulary size when the logits carry TP padding (default: no padding).
        normalizer: the token count the loss is averaged over; pass the step's global count (summed over
            micro-batches and all-reduced over DP) so that accumulation equals one big batch. Default: the
            valid tokens of this micro-batch.
    Returns:
        ``(loss, metrics)``; ``loss`` is differentiable w.r.t. ``logits``; ``metrics`` are the objective's terms
        and ``loss/lambda``, the λ_k it used.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}")
    spec = ALGORITHMS[algorithm]
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
    ids = [batch["labels"]]
    for key in spec.logp_of:  # a [B, T, K] tensor holds K ids per token
        ids += batch[key].unbind(-1) if batch[key].dim() == mask.dim() + 1 else [batch[key]]
    ids = [torch.where(mask.bool(), i, 0) for i in ids]
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
    entropy_mask = batch["entropy_weight"].to(mask) if "entropy_weight" in batch else mask
    terms = objectives.Terms(logps[0], entropy, mask, normalizer, logps[1:], batch, entropy_mask)
    lam = config.teacher_lambda(algorithm, step)
    loss, metrics = getattr(objectives, spec.objective)(terms, config, lam)
    return loss, {**metrics, "loss/lambda": torch.full((), lam, dtype=torch.float64, device=logits.device)}
