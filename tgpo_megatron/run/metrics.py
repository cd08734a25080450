"""Metrics: one JSON line per step always, TensorBoard by default, wandb when asked; one console line.

Only rank 0 writes (``NullLogger`` elsewhere), so the loop never asks which rank it is on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from contextlib import contextmanager
from typing import Optional

from tgpo_megatron.run.layout import RunDir

log = logging.getLogger(__name__)

METRICS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("reward/mean",), "mean training reward of the step's rollouts", "every step"),
    (
        ("reward/all_correct", "reward/none_correct"),
        "share of prompts whose G rollouts all scored 1 / all 0 (no GRPO signal)",
        "every step",
    ),
    (
        ("reward/reason/<reason>",),
        "share of rollouts per verdict: correct, wrong, no_think_end, no_answer, timeout, error, deadline",
        "verdicts that occurred",
    ),
    (
        ("rollout/response_length", "rollout/response_length_max", "rollout/tokens"),
        "mean and longest response, response tokens of the step",
        "every step",
    ),
    (("rollout/truncated",), "share of responses cut at `rollout.max_response_length`", "every step"),
    (
        ("rollout/weight_version", "rollout/staleness"),
        "the weights that generated the step's rollouts (the optimizer steps they hold); how many updates older "
        "they are than the student's at the step's start (docs/method.md §9)",
        "every step",
    ),
    (
        ("rollout/logprob_abs_diff", "rollout/token_mult_prob_error", "rollout/kl_k3"),
        "vLLM's log-probs of the generated tokens against the student's: mean |Δ log p|, mean exp(Δ), the k3 "
        "estimate of KL(engine ‖ trainer)",
        "every step",
    ),
    (
        ("correction/weight_mean", "correction/weight_max", "correction/token_share_changed"),
        "the engine-mismatch correction's weights (docs/method.md §8): mean and largest, share of generated tokens "
        "truncated (`tis`) or masked",
        "`rollout.correction`",
    ),
    (
        ("correction/sequence_share_masked",),
        "share of generated rollouts masked for their geometric-mean ratio",
        "`rollout.correction.mode: sequence_mask`",
    ),
    (
        ("gap/reverse_kl_k1",),
        "mean of log π_θold(y_t) − log π_T(y_t) over the step's response tokens, before the update",
        "with a teacher",
    ),
    (
        ("gap/mismatch_ratio",),
        "share of response tokens where the teacher's argmax is not the sampled token",
        "with a teacher",
    ),
    (("loss/total",), "the objective (mean over the step's optimizer steps)", "every step"),
    (("loss/pg", "loss/ppo_kl"), "the policy-gradient term; k1 estimate of KL(π_old ‖ π_θ)", "every step"),
    (("loss/pg_clipfrac",), "share of tokens where PPO's clipped branch is active", "PPO-clip objectives (not luffy)"),
    (("loss/entropy",), "token-mean entropy of the student", "every step"),
    (("loss/teacher_ce",), "cross-entropy of the student on the teacher's token", "tgpo_reg, tgpo_mc, teacher_ce"),
    (("loss/teacher_fkl_topk",), "forward KL on the teacher's renormalised top-K", "tgpo_fwd_topk"),
    (("loss/kl_k2",), "KDRL's ½ (log π_T − log π_θ)²", "kdrl"),
    (("loss/off_policy_prob",), "mean π_θ on the off-policy trace's tokens", "luffy"),
    (("loss/router_aux",), "the MoE student's load-balancing loss", "MoE student"),
    (("loss/lambda",), "λ_k of the step (0 without a teacher term), as the loss used it", "every update"),
    (("loss/nll",), "supervised negative log-likelihood", "`tgpo sft`"),
    (
        ("optim/grad_norm", "optim/grad_clip_coeff"),
        "gradient norm before clipping; the factor clipping applied (1: none)",
        "every update",
    ),
    (("optim/skipped",), "1 when a non-finite loss or gradient skipped the update", "every step"),
    (("refit/seconds", "refit/bytes", "refit/GBps"), "the weight transfer into vLLM", "every step"),
    (
        ("timing/<phase>",),
        "seconds in generate, reward, teacher, old_logprobs, train, refit, and the whole step",
        "every step",
    ),
    (
        ("timing/wait_rollouts",),
        "seconds the training ranks waited for the rollouts generated during the update (part of refit)",
        "`rollout.max_staleness: 1`",
    ),
    (
        ("timing/rollout_generate", "timing/rollout_wait"),
        "the rollout ranks' seconds generating the step's rollouts, and waiting for the training ranks since "
        "their previous batch",
        "`rollout.placement: separate`",
    ),
    (("throughput/tokens_per_s",), "response tokens per second of the step", "every step"),
    (
        ("memory/rss_gb", "memory/cuda_max_allocated_gb"),
        "host resident memory; peak GPU memory",
        "every step (the GPU's: on GPU)",
    ),
    (
        ("memory/gpu_free_before_weights_gb", "memory/gpu_free_before_kv_cache_gb"),
        "GPU memory free before vLLM's weights, then its KV cache, wake in the refit",
        "every step, on GPU",
    ),
    (
        ("eval/<set>/avg@<n>", "eval/<set>/pass@<k>"),
        "held-out accuracy of an eval set (n samples per problem)",
        "every `eval.every_n_steps`",
    ),
)
"""Every metric a run logs: (names, meaning, when). ``<x>`` stands for one path segment. docs/metrics.md is
generated from it, and the end-to-end tests check that every key a run logs is here."""


def documented(key: str) -> bool:
    """Whether ``key`` is one of :data:`METRICS`."""
    return any(
        re.fullmatch(re.sub(r"<[^>]+>", "[^/]+", re.escape(name).replace(r"\<", "<").replace(r"\>", ">")), key)
        for names, _, _ in METRICS
        for name in names
    )


class Timer:
    """``with timer("generate"): ...`` accumulates ``timing/generate`` seconds."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"timing/{phase}"
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start


class NullLogger:
    def log(self, step: int, metrics: dict) -> None:
        pass

    def close(self) -> None:
        pass


class MetricsLogger:
    def __init__(
        self,
        run_dir: str,
        tensorboard: bool = True,
        wandb_project: Optional[str] = None,
        config: Optional[dict] = None,
        resume_step: int = 0,
    ):
        self.path = RunDir(run_dir).metrics
        _truncate_after(self.path, resume_step)
        self.tb = self.wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # the tensorboard package itself is what is missing
                raise ImportError(
                    "TensorBoard logging needs `pip install tensorboard` (or set trainer.tensorboard=false)"
                ) from e
            self.tb = SummaryWriter(RunDir(run_dir).tensorboard, purge_step=resume_step + 1)
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ImportError("trainer.wandb_project is set: pip install wandb") from e
            self.wandb = wandb.init(
                project=wandb_project,
                config=config,
                dir=run_dir,
                resume="allow",
                name=os.path.basename(os.path.abspath(run_dir)),
            )

    def log(self, step: int, metrics: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key, value, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        log.info(console_line(step, metrics))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _truncate_after(path: str, step: int) -> None:
    """Drop lines of steps after ``step`` (written by a run that died before checkpointing them)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(lines)


CONSOLE = (
    ("reward/mean", "reward", ".3f"),
    ("loss/total", "loss", ".4f"),
    ("loss/nll", "nll", ".4f"),
    ("rollout/response_length", "len", ".1f"),
    ("gap/reverse_kl_k1", "gap", ".2f"),
    ("gap/mismatch_ratio", "mismatch", ".2f"),
    ("loss/lambda", "λ", ".3g"),
    ("optim/grad_norm", "|g|", ".3g"),
    ("timing/step", "s", ".2f"),
)


def console_line(step: int, metrics: dict) -> str:
    """``step 3 | reward 0.412 | loss 0.0812 | ...`` with whichever of the usual keys are present."""
    parts = [f"step {step}"] + [f"{label} {metrics[key]:{fmt}}" for key, label, fmt in CONSOLE if key in metrics]
    if metrics.get("optim/skipped"):
        parts.append("update skipped")
    return " | ".join(parts)
