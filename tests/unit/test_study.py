"""The study's design file, its runs and its verdict rules, without running anything (the plumbing end to end is
tests/e2e/test_study.py)."""

import math
import statistics

import numpy as np
import pytest
import yaml

from tgpo_megatron.config import ConfigError, from_dict
from tgpo_megatron.toy.design import DESIGN, RunSpec, StudyDesign, load_design, run_specs
from tgpo_megatron.toy.report import called, ladder_slopes, mean_se, verdict
from tgpo_megatron.toy.study import run_overrides


def test_a_design_file_missing_a_field_is_refused_naming_file_and_field(tmp_path):
    shipped = yaml.safe_load(open(DESIGN))
    del shipped["switch_step"]
    path = tmp_path / "design.yaml"
    path.write_text(yaml.safe_dump(shipped))
    with pytest.raises(ConfigError, match=rf"{path}.*switch_step"):
        load_design(str(path), quick=False, seeds=None)


def test_a_design_with_a_typo_is_refused():
    with pytest.raises(ConfigError, match="did you mean switch_step"):
        from_dict(StudyDesign, {**yaml.safe_load(open(DESIGN)), "swtich_step": 20}, "")


def test_the_shipped_design_runs_19_runs_a_seed():
    # by hand: grpo once (no teacher); at the two claim teachers rkl, kdrl, tgpo_reg, luffy and the sequential
    # baseline's two phases (6 each); at the two middle teachers the three ladder methods
    design = load_design(DESIGN, quick=False, seeds=None)
    specs = run_specs(design)
    assert len(specs) == len(design.seeds) * (1 + 2 * 6 + 2 * 3)
    assert len({s.name for s in specs}) == len(specs)


def test_run_overrides_chain_the_sequential_phases_and_give_luffy_traces_in_the_teachers_style():
    design = load_design(DESIGN, quick=False, seeds=None)
    models = {"student": {"path": "/s"}, "teachers": {f"{f:.2f}": {"path": f"/t{f}"} for f in design.teacher_fractions}}

    def values(spec):
        return dict(o.split("=", 1) for o in run_overrides(spec, design, "/out", models))

    first = values(RunSpec("sequential", 1.0, 2, "distill"))
    second = values(RunSpec("sequential", 1.0, 2, "grpo"))
    assert (first["algorithm.name"], first["teacher.hf_path"], first["trainer.steps"]) == ("teacher_ce", "/t1.0", "20")
    assert first["trainer.export_hf"] == "True" and first["algorithm.lambda_decay"] == "0.0"
    assert second["student.hf_path"] == "/out/rl/sequential/teacher_1.00/seed2/distill/hf"
    assert (second["algorithm.name"], second["teacher.hf_path"], second["trainer.steps"]) == ("grpo", "", "40")
    assert values(RunSpec("luffy", 1.0, 1))["data.train_files"] == "[/out/data/train.parquet]"
    assert values(RunSpec("luffy", 0.0, 1))["data.train_files"] == "[/out/data/train_semicolon.parquet]"
    assert values(RunSpec("grpo", None, 3))["trainer.seed"] == values(RunSpec("grpo", None, 3))["data.seed"] == "3"


def test_mean_se_is_the_sample_sd_over_root_n():
    values = [0.61, 0.70, 0.64]
    assert mean_se(values) == pytest.approx((statistics.mean(values), statistics.stdev(values) / math.sqrt(3)))
    assert math.isnan(mean_se([0.5])[1])


def test_a_difference_is_called_only_beyond_two_standard_errors():
    assert [called(e) for e in ((0.09, 0.04), (0.07, 0.04), (-0.09, 0.04), (0.3, float("nan")), None)] == [
        1,
        0,
        -1,
        None,
        None,
    ]
    assert verdict([1, 1]) == "**held**"
    assert verdict([1, -1]) == "**did not hold**"
    assert verdict([1, 0]) == "**not decided at this power**"
    assert verdict([1, None]).startswith("**not decidable")


def test_ladder_slope_and_its_standard_error_match_numpy_least_squares():
    design = load_design(DESIGN, quick=False, seeds=None)
    rng = np.random.default_rng(0)
    summary, xs, ys = {}, [], []
    for fraction, gap in zip(design.teacher_fractions, (0.6, 0.7, 1.5, 2.8)):
        seeds = {}
        for seed in design.seeds:
            x, y = gap + rng.normal(0, 0.05), 0.8 - 0.3 * gap + rng.normal(0, 0.02)
            seeds[seed] = {"gap_step1": x, "accuracy": {str(design.rl_steps): y}}
            xs, ys = xs + [x], ys + [y]
        summary[f"rkl@{fraction:.2f}"] = {"seeds": seeds}
    (slope, _), cov = np.polyfit(xs, ys, 1, cov=True)
    assert ladder_slopes(summary, design)["rkl"] == pytest.approx((slope, math.sqrt(cov[0, 0])), rel=1e-9)
