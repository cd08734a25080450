"""The study's design file, its runs, its data and its statistics, without running anything (the plumbing end to
end is tests/e2e/test_study.py). The statistics are checked against closed forms and printed tables, not against
the code under test."""

import math

import pytest
import yaml

from tgpo_megatron.config import ConfigError, from_dict
from tgpo_megatron.losses.coefficients import linear_decay
from tgpo_megatron.toy.design import DESIGN, NO_TEACHER, StudyDesign, load_design, run_specs
from tgpo_megatron.toy.report import area, preregistered_tests
from tgpo_megatron.toy.stats import holm, interval, non_inferiority, paired, t_cdf, t_quantile


def test_a_design_file_missing_a_field_is_refused_naming_file_and_field(tmp_path):
    shipped = yaml.safe_load(open(DESIGN))
    del shipped["lambda_zero_step"]
    path = tmp_path / "design.yaml"
    path.write_text(yaml.safe_dump(shipped))
    with pytest.raises(ConfigError, match=rf"{path}.*lambda_zero_step"):
        load_design(str(path), quick=False, seeds=None)


def test_a_design_with_a_typo_is_refused():
    with pytest.raises(ConfigError, match="did you mean carry_shares"):
        from_dict(StudyDesign, {**yaml.safe_load(open(DESIGN)), "carry_share": [0.1]}, "")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"cells": {"strong_large": ["grpo"]}}, "without a teacher"),
        ({"cells": {"strong_small": ["rkl"]}}, "probe's cell strong_large"),
        ({"cells": {"strong_large": ["tgpo_reg"], "weak": ["rkl"]}}, "unknown cell 'weak'"),
        ({"seeds": [0, 1]}, "not the pilot's"),
        ({"carry_shares": [0.15, 0.05]}, "ascending"),
    ],
)
def test_an_impossible_design_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        StudyDesign(**{**yaml.safe_load(open(DESIGN)), **change})


def test_the_shipped_design_runs_6_runs_a_seed():
    # by hand: grpo once (no teacher); rkl and tgpo_reg with each strong teacher; tgpo_reg with the peer
    design = load_design(DESIGN, quick=False, seeds=None)
    specs = run_specs(design)
    assert len(design.seeds) == 5 and len(specs) == 5 * 6
    assert len({s.name for s in specs}) == len(specs)
    seed1 = sorted(s.name for s in specs if s.seed == 1)
    assert seed1 == [
        f"grpo/{NO_TEACHER}/seed1",
        "rkl/strong_large/seed1",
        "rkl/strong_small/seed1",
        "tgpo_reg/peer_large/seed1",
        "tgpo_reg/strong_large/seed1",
        "tgpo_reg/strong_small/seed1",
    ]


def test_lambda_reaches_zero_at_the_designed_step_and_stays_there():
    design = load_design(DESIGN, quick=False, seeds=None)
    initial, decay = design.lambda_schedule(0.08)
    lams = [linear_decay(k, initial, decay) for k in range(1, design.rl_steps + 1)]
    assert lams[0] == 0.08 and lams[design.lambda_zero_step - 2] > 0
    assert lams[design.lambda_zero_step - 1] == pytest.approx(0.0, abs=1e-15)
    assert max(lams[design.lambda_zero_step - 1 :]) < 1e-15  # then plain GRPO for the last third


def test_student_rows_are_every_carry_free_problem_plus_the_share_of_carries(tmp_path):
    import pyarrow.parquet as pq

    from tgpo_megatron.data.synthetic import Problem, sample_problems
    from tgpo_megatron.toy.study import student_data

    assert Problem(357, 68, 3).has_carry and not Problem(123, 456, 3).has_carry
    assert Problem(500, 500, 3).has_carry  # the last column carries out: the sum has four digits
    train = sample_problems(3000, seed=1)
    task = {"train": train, "dir": str(tmp_path)}
    free = {p.prompt for p in train if not p.has_carry}
    rows = pq.read_table(student_data(task, 0.15, seed=4, separator=";")).to_pylist()
    prompts = {r["problem"] for r in rows}
    carries = len(rows) - len(free)
    assert free <= prompts and carries / len(rows) == pytest.approx(0.15, abs=1 / len(rows))
    assert all(";" in r["solution"] and "," not in r["solution"] for r in rows)
    again = pq.read_table(student_data(task, 0.15, seed=4, separator=",")).to_pylist()
    assert [r["problem"] for r in again] == [r["problem"] for r in rows]  # the peer: the same rows, other style
    other = pq.read_table(student_data(task, 0.15, seed=5, separator=";")).to_pylist()
    assert {r["problem"] for r in other} != prompts  # another seed draws other carry problems


def test_t_distribution_against_closed_forms_and_tables():
    for t in (-3.0, -0.5, 0.0, 0.7, 2.0, 9.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    # printed tables: t_{0.975} at 4 and 2 degrees of freedom, t_{0.95} at 4, t_{0.8} at 4
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-5)
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-5)
    assert t_quantile(0.95, 4) == pytest.approx(2.131847, abs=1e-5)
    assert t_quantile(0.80, 4) == pytest.approx(0.940965, abs=1e-5)
    assert 2 * (1 - t_cdf(2.0, 4)) == pytest.approx(0.1161, abs=1e-4)  # v1's 2-SE rule at 2 seeds a side


def test_paired_difference_by_hand():
    a, b = [0.60, 0.70, 0.65, 0.80, 0.75], [0.55, 0.62, 0.66, 0.70, 0.69]
    d = [x - y for x, y in zip(a, b)]  # 0.05, 0.08, -0.01, 0.10, 0.06
    mean = sum(d) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 4)
    result = paired(a, b)
    assert result.mean == pytest.approx(0.056) and result.sd == pytest.approx(sd)
    assert (result.low, result.high) == pytest.approx((mean - 2.776445 * sd / 5**0.5, mean + 2.776445 * sd / 5**0.5))
    assert result.p_greater == pytest.approx(1 - t_cdf(mean / (sd / 5**0.5), 4))
    assert paired([0.5], [0.4]) is None
    with pytest.raises(ValueError, match="same seeds"):
        paired([0.1, 0.2], [0.1])
    assert interval([0.3]) == (0.3, 0.3, 0.3)


def test_holm_steps_down_and_stops_at_the_first_failure():
    assert holm({"H1": 0.01, "H2": 0.04}) == {"H1": True, "H2": True}  # 0.01 <= 0.025, then 0.04 <= 0.05
    assert holm({"H1": 0.03, "H2": 0.04}) == {"H1": False, "H2": False}  # 0.03 > 0.025 stops everything
    assert holm({"H1": 0.2, "H2": 0.001}) == {"H1": False, "H2": True}


def test_non_inferiority_reads_the_interval():
    assert non_inferiority(paired([0.80, 0.81, 0.79], [0.80, 0.80, 0.80]), 0.03) == "non-inferior"
    assert non_inferiority(paired([0.70, 0.71, 0.69], [0.80, 0.80, 0.80]), 0.03) == "inferior"
    assert non_inferiority(paired([0.70, 0.85, 0.78], [0.80, 0.80, 0.80]), 0.03) == "unresolved"


def test_the_pre_registered_verdicts_on_made_up_results():
    design = load_design(DESIGN, quick=False, seeds=None)
    final = str(design.rl_steps)
    means = {  # method@cell: the per-seed final accuracies
        f"grpo@{NO_TEACHER}": [0.60, 0.62, 0.58, 0.61, 0.59],
        "rkl@strong_large": [0.10, 0.05, 0.12, 0.08, 0.02],
        "rkl@strong_small": [0.60, 0.63, 0.58, 0.62, 0.60],
        "tgpo_reg@strong_large": [0.70, 0.73, 0.66, 0.72, 0.69],
        "tgpo_reg@peer_large": [0.58, 0.60, 0.57, 0.59, 0.60],
        "tgpo_reg@strong_small": [0.75, 0.76, 0.74, 0.77, 0.73],
    }
    summary = {k: {str(s): {"accuracy": {final: v}} for s, v in zip(design.seeds, vs)} for k, vs in means.items()}
    result = preregistered_tests(summary, design)
    assert result["verdicts"] == {
        "H1": "supported",
        "H2": "supported",
        "C1": "non-inferior",
        "C2": "supported",
        "C3": "estimate only",
    }
    assert result["comparisons"]["H1"].mean == pytest.approx(0.10)
    means["tgpo_reg@strong_large"] = [0.60, 0.64, 0.55, 0.63, 0.58]  # no better than grpo, nor the peer
    summary["tgpo_reg@strong_large"] = {
        str(s): {"accuracy": {final: v}} for s, v in zip(design.seeds, means["tgpo_reg@strong_large"])
    }
    verdicts = preregistered_tests(summary, design)["verdicts"]
    assert verdicts["H1"] == "not supported" and verdicts["C2"] == "not supported" and verdicts["H2"] == "supported"


def test_area_is_the_mean_height_of_the_curve():
    assert area({"0": 0.2, "20": 0.4, "40": 0.4}) == pytest.approx((0.3 * 20 + 0.4 * 20) / 40)
