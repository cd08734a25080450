"""How per-token losses become a mini-batch's loss (``algorithm.loss_agg_mode`` and ``algorithm.loss_scale``;
verl's mode names).

Every objective is ``Σ_t w_t ℓ_t / N`` over the mini-batch's response tokens (``compute_loss``: the loss mask
carries the weights w, ``normalizer`` is N). A mode is a per-rollout token weight and a normalizer, both
computed from the whole mini-batch before it is split over micro-batches and data-parallel ranks. With
``loss_scale: batch`` (the default) every mode gives exactly the gradient of one big batch, whatever the
packing and the number of ranks:

| mode | mini-batch loss (``batch``) | per micro-batch j (``micro-batch-sum``, verl's ``agg_loss``) |
|---|---|---|
| ``token-mean`` | Σ_i Σ_t ℓ / Σ_i L_i | Σ_{i∈j} Σ_t ℓ / Σ_{i∈j} L_i |
| ``seq-mean-token-mean`` | mean_i (Σ_t ℓ / L_i) | mean_{i∈j} (Σ_t ℓ / L_i) |
| ``seq-mean-token-sum`` | mean_i Σ_t ℓ | mean_{i∈j} Σ_t ℓ |
| ``seq-mean-token-sum-norm`` | mean_i Σ_t ℓ / H (Dr. GRPO) | Σ_{i∈j} Σ_t ℓ / H |

L_i is rollout i's response tokens, H the response budget (``rollout.max_response_length``).

``loss_scale: micro-batch-sum`` is the authors' scale (their verl fork, docs/method.md §7): each micro-batch's
loss as in the right-hand column, **summed** over a rank's k micro-batches (their gradient accumulation count
is 1), averaged over the W data-parallel ranks. It depends on how the mini-batch is cut into micro-batches
(here: this run's own plan, ``trainer.micro_batch_tokens`` and the student's DP), and is about k times the
``batch`` loss for the token-mean modes.

The entropy bonus is a token mean in every mode, as in the authors' actor (it does not follow the policy
term's aggregation): per micro-batch and summed under ``micro-batch-sum``; under ``batch`` a mini-batch token
mean weighted so that its ratio to the policy term is the authors' (for ``seq-mean-token-sum-norm`` that is
k·W/n times the token mean, n the mini-batch's rollouts; 1 for the other modes). Plain Python: recipes
validate without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
LOSS_SCALES = ("batch", "micro-batch-sum")


def loss_aggregation(mode: str, response_lengths: Sequence[int], horizon: int) -> tuple[list[float], float]:
    """``(token weight per rollout, normalizer)`` of ``mode`` over one batch of rollouts (a mini-batch under
    the ``batch`` scale, one micro-batch in verl's per-micro-batch form)."""
    lengths = [max(int(n), 1) for n in response_lengths]
    count = float(max(len(lengths), 1))
    if mode == "token-mean":
        return [1.0] * len(lengths), float(max(sum(lengths), 1))
    if mode == "seq-mean-token-mean":
        return [1.0 / n for n in lengths], count
    if mode == "seq-mean-token-sum":
        return [1.0] * len(lengths), count
    if mode == "seq-mean-token-sum-norm":
        if horizon < 1:
            raise ValueError(f"seq-mean-token-sum-norm needs a response budget >= 1, got {horizon}")
        return [1.0 / horizon] * len(lengths), count
    raise ValueError(f"loss_agg_mode={mode!r} must be one of {', '.join(LOSS_AGG_MODES)}")


@dataclass(frozen=True)
class Aggregation:
    """Per-rollout token weights of the loss and of the entropy bonus, and the normalizer both are divided by
    (the same on every rank)."""

    weights: list[float]
    entropy_weights: Optional[list[float]]
    """None: the entropy bonus takes ``weights`` (the default token-mean batch loss)."""
    normalizer: Optional[float]
    """None: the mini-batch's token count (the student computes it)."""


def mini_batch_aggregation(
    mode: str,
    scale: str,
    response_lengths: Sequence[int],
    horizon: int,
    micro_batches: Sequence[Sequence[int]],
    ranks: int,
) -> Aggregation:
    """The weights of ``mode`` at ``scale`` for a mini-batch of rollouts (``response_lengths``) of which this
    rank computes ``micro_batches`` (lists of indices; the same count on every one of the ``ranks`` ranks).
    Under ``micro-batch-sum`` a rollout outside this rank's micro-batches gets weight 0: another rank
    computes it."""
    if scale == "batch":
        if mode == "token-mean":
            return Aggregation([1.0] * len(response_lengths), None, None)
        weights, normalizer = loss_aggregation(mode, response_lengths, horizon)
        tokens = float(max(sum(max(int(n), 1) for n in response_lengths), 1))
        ratio = len(micro_batches) * ranks / len(response_lengths) if mode == "seq-mean-token-sum-norm" else 1.0
        return Aggregation(weights, [normalizer * ratio / tokens] * len(weights), normalizer)
    if scale != "micro-batch-sum":
        raise ValueError(f"loss_scale={scale!r} must be one of {', '.join(LOSS_SCALES)}")
    weights, entropy = [0.0] * len(response_lengths), [0.0] * len(response_lengths)
    for group in micro_batches:
        if not group:
            continue
        lengths = [response_lengths[i] for i in group]
        local, normalizer = loss_aggregation(mode, lengths, horizon)
        if mode == "seq-mean-token-sum-norm":
            normalizer = 1.0  # verl's and the authors' LUFFY: the micro-batch's token sum over H, not a mean
        tokens = float(max(sum(max(int(n), 1) for n in lengths), 1))
        for i, w in zip(group, local):
            weights[i] = w / (normalizer * ranks)
            entropy[i] = 1.0 / (tokens * ranks)
    return Aggregation(weights, entropy, 1.0)
