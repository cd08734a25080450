"""How per-token losses become a mini-batch's loss (``algorithm.loss_agg_mode``; verl's names).

Every objective is ``Σ_t w_t ℓ_t / N`` over the mini-batch's response tokens (``compute_loss``: the loss mask
carries the weights w, ``normalizer`` is N). A mode is a per-rollout token weight and a normalizer, both
computed from the whole mini-batch before it is split over micro-batches and data-parallel ranks, so every
mode gives exactly the gradient of one big batch:

| mode | mini-batch loss | w (rollout i) | N |
|---|---|---|---|
| ``token-mean`` | Σ_i Σ_t ℓ / Σ_i L_i | 1 | Σ_i L_i |
| ``seq-mean-token-mean`` | mean_i (Σ_t ℓ / L_i) | 1 / L_i | n |
| ``seq-mean-token-sum`` | mean_i Σ_t ℓ | 1 | n |
| ``seq-mean-token-sum-norm`` | mean_i Σ_t ℓ / H (Dr. GRPO) | 1 / H | n |

L_i is rollout i's response tokens, n the mini-batch's rollouts, H the response budget
(``rollout.max_response_length``), a constant so that long and short responses weigh alike. verl computes
each mode per micro-batch and averages the micro-batches, which changes the loss with the micro-batch size;
here it does not. Plain Python: recipes validate without torch.
"""

from __future__ import annotations

from typing import Sequence

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def loss_aggregation(mode: str, response_lengths: Sequence[int], horizon: int) -> tuple[list[float], float]:
    """``(token weight per rollout, normalizer)`` of ``mode`` for a mini-batch of rollouts."""
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
