"""The study's design: what ``tgpo study`` runs (``recipes/study.yaml`` holds every number, and says why), and
the runs it makes of it. Read by the study and by its report."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from tgpo_megatron.config import ConfigError, from_dict, read_recipe
from tgpo_megatron.losses.registry import ALGORITHM_NAMES, ALGORITHMS
from tgpo_megatron.toy.demo import Schedule

DESIGN = os.path.join(os.path.dirname(__file__), "recipes", "study.yaml")
LARGE, SMALL = 1.0, 0.0
SEQUENTIAL = "sequential"
SEQUENTIAL_PHASES = (("distill", "teacher_ce"), ("grpo", "grpo"))
"""The sequential baseline's runs: (directory, algorithm), the first for ``switch_step`` steps."""


@dataclass(frozen=True)
class StudyDesign:
    """What the study runs: every field but ``rl_overrides`` comes from the design file (``recipes/study.yaml``
    says why each number is what it is), so the design has one owner."""

    seeds: list[int]
    rl_steps: int
    eval_every: int
    switch_step: int
    teacher_fractions: list[float]
    claim_methods: list[str]
    ladder_methods: list[str]
    train_problems: int
    test_problems: int
    teacher_sft_steps: int
    student_sft_steps: int
    snapshot_every: int
    weak_student_accuracy: float
    rl_overrides: list[str] = field(default_factory=list)
    """Further overrides of every RL run (``--quick``: smaller steps)."""

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("seeds: give at least one")
        if self.rl_steps % self.eval_every or self.switch_step % self.eval_every:
            raise ValueError(
                f"eval_every={self.eval_every} must divide rl_steps={self.rl_steps} and "
                f"switch_step={self.switch_step} (the sequential baseline is evaluated at the same steps)"
            )
        if not 0 < self.switch_step < self.rl_steps:
            raise ValueError(f"switch_step={self.switch_step} must lie inside the {self.rl_steps} RL steps")
        if LARGE not in self.teacher_fractions or SMALL not in self.teacher_fractions:
            raise ValueError("teacher_fractions must hold 0.0 (small gap) and 1.0 (large gap)")
        methods = {*ALGORITHM_NAMES, SEQUENTIAL}
        unknown = sorted(set(self.claim_methods + self.ladder_methods) - methods)
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {sorted(methods)}")

    def schedule(self) -> Schedule:
        return Schedule(
            teacher_sft_steps=self.teacher_sft_steps,
            student_sft_steps=self.student_sft_steps,
            snapshot_every=self.snapshot_every,
            rl_steps=self.rl_steps,
            eval_every=self.eval_every,
            train_problems=self.train_problems,
            test_problems=self.test_problems,
        )


QUICK = dict(
    rl_steps=2,
    eval_every=1,
    switch_step=1,
    train_problems=2000,
    test_problems=32,
    teacher_sft_steps=10,
    student_sft_steps=10,
    snapshot_every=5,
    rl_overrides=["trainer.prompts_per_step=4", "rollout.n=4"],
)


def load_design(path: str, quick: bool, seeds: int | None) -> StudyDesign:
    try:
        design = from_dict(StudyDesign, read_recipe(path), "")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if quick:
        design = replace(design, seeds=design.seeds[:1], **QUICK)
    if seeds is not None:
        design = replace(design, seeds=list(range(1, seeds + 1)))
    return design


@dataclass(frozen=True)
class RunSpec:
    method: str
    fraction: float | None  # the teacher's; None for grpo (no teacher)
    seed: int
    phase: str = ""  # of the sequential baseline (SEQUENTIAL_PHASES)

    @property
    def name(self) -> str:
        teacher = "" if self.fraction is None else f"/teacher_{self.fraction:.2f}"
        return f"{self.method}{teacher}/seed{self.seed}" + (f"/{self.phase}" if self.phase else "")


def without_teacher(method: str) -> bool:
    """A method that reads neither a teacher nor traces in its style: one run per seed serves every teacher."""
    spec = ALGORITHMS.get(method)
    return spec is not None and not spec.uses_teacher and not spec.off_policy_traces


def run_specs(design: StudyDesign) -> list[RunSpec]:
    specs = []
    for seed in design.seeds:
        specs += [RunSpec(m, None, seed) for m in design.claim_methods if without_teacher(m)]
        for fraction in design.teacher_fractions:
            claim = fraction in (SMALL, LARGE)
            for method in design.claim_methods if claim else design.ladder_methods:
                if method == SEQUENTIAL:
                    specs += [RunSpec(method, fraction, seed, phase) for phase, _ in SEQUENTIAL_PHASES]
                elif not without_teacher(method):
                    specs.append(RunSpec(method, fraction, seed))
    return specs
