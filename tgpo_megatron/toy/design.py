"""The study's design: what ``tgpo study`` runs (``recipes/study.yaml`` holds every number and says why;
docs/study_preregistration.md the hypotheses and tests), and the runs it makes of it. Read by the study and by
its report."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Optional

from tgpo_megatron.config import ConfigError, from_dict, read_recipe
from tgpo_megatron.losses.registry import ALGORITHMS

DESIGN = os.path.join(os.path.dirname(__file__), "recipes", "study.yaml")
NO_TEACHER = "none"
TEACHERS = {  # cell: (the teacher model, whether it is the student's twin)
    "strong_small": ("strong_semicolon", False),
    "strong_large": ("strong_comma", False),
    "peer_large": ("peer", True),
}
"""The teachers a cell can name: a strong teacher in the student's style (``;``) or the other (``,``), or the
seed's peer (the student's twin in the ``,`` style)."""
PROBE_CELL = "strong_large"


@dataclass(frozen=True)
class StudyDesign:
    """What the study runs: every field but ``rl_overrides`` comes from the design file, so the design has one
    owner."""

    seeds: list[int]
    pilot_seed: int
    rl_steps: int
    eval_every: int
    methods: list[str]
    cells: dict[str, list[str]]
    train_problems: int
    validation_problems: int
    test_problems: int
    carry_shares: list[float]
    pilot_band: list[float]
    pilot_samples: int
    student_sft_steps: int
    teacher_sft_steps: int
    probe_fraction: float
    lambda_zero_step: int
    rl_overrides: list[str] = field(default_factory=list)
    """Further overrides of every RL run (``--quick``: smaller steps)."""

    def __post_init__(self):
        if not self.seeds or self.pilot_seed in self.seeds:
            raise ValueError(f"seeds={self.seeds}: give at least one, and not the pilot's ({self.pilot_seed})")
        if self.rl_steps % self.eval_every:
            raise ValueError(f"eval_every={self.eval_every} must divide rl_steps={self.rl_steps}")
        unknown = sorted(set(self.methods) - set(ALGORITHMS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {sorted(ALGORITHMS)}")
        if PROBE_CELL not in self.cells:
            raise ValueError(f"cells: the λ probe's cell {PROBE_CELL} is missing")
        for cell, methods in self.cells.items():
            if cell not in TEACHERS:
                raise ValueError(f"cells: unknown cell {cell!r}; choose from {sorted(TEACHERS)}")
            if not set(methods) <= set(self.methods):
                raise ValueError(f"cells: {cell} runs {methods}, not all in methods={self.methods}")
            if any(not ALGORITHMS[m].uses_teacher for m in methods):
                raise ValueError(f"cells: {cell} lists a method without a teacher ({methods})")
        if not (len(self.pilot_band) == 2 and 0 <= self.pilot_band[0] < self.pilot_band[1] <= 1):
            raise ValueError(f"pilot_band={self.pilot_band} must be [low, high] within [0, 1]")
        if sorted(self.carry_shares) != self.carry_shares or not all(0 <= c < 1 for c in self.carry_shares):
            raise ValueError(f"carry_shares={self.carry_shares} must be ascending shares in [0, 1)")
        if not 1 < self.lambda_zero_step <= self.rl_steps:
            raise ValueError(f"lambda_zero_step={self.lambda_zero_step} must lie in (1, rl_steps]")

    def lambda_schedule(self, lambda_init: float) -> tuple[float, float]:
        """λ0 and the decay that brings λ_k = λ0 - (k - 1) δ to 0 at ``lambda_zero_step``."""
        return lambda_init, lambda_init / (self.lambda_zero_step - 1)


QUICK = dict(
    rl_steps=2,
    eval_every=1,
    lambda_zero_step=2,
    train_problems=2000,
    validation_problems=40,
    test_problems=48,
    carry_shares=[0.05],
    pilot_samples=1,
    student_sft_steps=10,
    teacher_sft_steps=10,
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
    cell: str  # NO_TEACHER for a method without one
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}/{self.cell}/seed{self.seed}"

    @property
    def teacher(self) -> Optional[str]:
        return None if self.cell == NO_TEACHER else TEACHERS[self.cell][0]


def run_specs(design: StudyDesign) -> list[RunSpec]:
    specs = []
    for seed in design.seeds:
        specs += [RunSpec(m, NO_TEACHER, seed) for m in design.methods if not ALGORITHMS[m].uses_teacher]
        specs += [RunSpec(m, cell, seed) for cell, methods in design.cells.items() for m in methods]
    return specs
