"""The algorithm registry: everything the loop, the teacher and the recipe checks know about each objective,
in plain Python so that a recipe validates where torch is not installed (the launcher on a login node).

Nothing outside this registry reads an algorithm's name. Adding an objective: its formula
``f(terms, coefficients, λ_k) -> (loss, metrics)`` in ``objectives.py``, one ``Algorithm`` here naming it and
what it reads, and its float64 test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Algorithm:
    objective: str
    """The function of ``objectives`` that computes ``(loss, metrics)`` from the student's terms and the batch's
    values (``objectives.Terms``)."""
    needs: tuple[str, ...] = ("advantages",)
    """Batch keys the objective reads beyond labels, loss_mask and old_logp: ``advantages`` (per rollout) and
    per-token values (``batching.PER_TOKEN``)."""
    logp_of: tuple[str, ...] = ()
    """Batch keys of ids, beyond the sampled token, whose student log-probs the objective reads (a
    ``[B, T, K]`` tensor gives K of them)."""
    teacher: tuple[str, ...] = ()
    """What the teacher computes per response token, beyond its argmax ŷ_t and log π_T(y_t) (always, for the
    gap probes): ``sampled`` (an id drawn at ``teacher_sample_temperature``), ``topk``."""
    old_logp_of: tuple[str, ...] = ()
    """Id keys whose log π_old the student computes before the update, stored as ``old_logp_<key>``."""
    off_policy_traces: bool = False
    """One rollout of each group is the dataset's reference response (``off_policy`` marks its tokens)."""
    default_lambda: Optional[tuple[float, float]] = None
    """λ0 and the per-step decay δ of the teacher term when the recipe gives none: the paper's for the TGPO
    variants (docs/method.md §2.4, §6); None: no λ term."""
    loss_agg_mode: str = "token-mean"
    """The aggregation the algorithm's authors used, when the recipe does not choose one."""
    policy_gradient: bool = True
    """The objective has a policy-gradient term on the student's samples, which ``rollout.correction``
    weighs (docs/method.md §8)."""

    @property
    def uses_teacher(self) -> bool:
        return any(key.startswith("teacher_") for key in self.needs) or bool(self.old_logp_of)

    @property
    def per_token_keys(self) -> list[str]:
        """The rollouts' per-token values a training micro-batch carries (the advantage is per rollout)."""
        return ["old_logp", *[key for key in self.needs if key != "advantages"]]


PAPER_TGPO_LAMBDA = (0.002, 1e-5)

ALGORITHMS: dict[str, Algorithm] = {
    "grpo": Algorithm("grpo"),
    "tgpo_reg": Algorithm(
        "tgpo_reg",
        ("advantages", "teacher_ids"),
        logp_of=("teacher_ids",),
        default_lambda=PAPER_TGPO_LAMBDA,
    ),
    "tgpo_mc": Algorithm(
        "tgpo_reg",
        ("advantages", "teacher_sampled_ids"),
        logp_of=("teacher_sampled_ids",),
        teacher=("sampled",),
        default_lambda=PAPER_TGPO_LAMBDA,
    ),
    "tgpo_adv": Algorithm(
        "tgpo_adv",
        ("advantages", "old_logp_teacher_ids"),
        old_logp_of=("teacher_ids",),
        default_lambda=(0.02, 1e-4),
    ),
    "tgpo_fwd_topk": Algorithm(
        "tgpo_fwd_topk",
        ("advantages", "teacher_topk_ids", "teacher_topk_probs"),
        logp_of=("teacher_topk_ids",),
        teacher=("topk",),
        default_lambda=PAPER_TGPO_LAMBDA,
    ),
    "rkl": Algorithm("rkl", ("teacher_logp",)),
    "kdrl": Algorithm("kdrl", ("advantages", "teacher_logp")),
    # no reward: λ scales the whole loss, so it stays 1 unless the recipe says otherwise
    "teacher_ce": Algorithm(
        "teacher_ce", ("teacher_ids",), logp_of=("teacher_ids",), default_lambda=(1.0, 0.0), policy_gradient=False
    ),
    # LUFFY sums every token's loss and divides by the response budget (its script's loss_remove_token_mean)
    "luffy": Algorithm(
        "luffy",
        ("advantages", "off_policy"),
        off_policy_traces=True,
        loss_agg_mode="seq-mean-token-sum-norm",
    ),
}
ALGORITHM_NAMES = tuple(ALGORITHMS)
