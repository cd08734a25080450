"""tools/measure_divergence.py end to end: vLLM rollouts of the student, teacher forcing in transformers."""

import json
import os

import pytest

from tests.e2e.conftest import run_cli
from tgpo_megatron.data.synthetic import problem_rows, sample_problems, write_rows
from tgpo_megatron.data.tokenizer import char_vocabulary

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "measure_divergence.py")


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return write_rows(problem_rows(sample_problems(4, seed=5)), str(tmp_path_factory.mktemp("d") / "p.jsonl"))


def measure(student, teachers, prompts, out):
    run = run_cli(
        TOOL,
        "--student",
        student,
        "--teacher",
        *teachers,
        "--data",
        prompts,
        "--prompts",
        4,
        "--n",
        2,
        "--max-tokens",
        12,
        "--system-prompt",
        "",
        "--kv-cache-gb",
        0.0625,
        "--out",
        out,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(open(out).read())


@pytest.fixture(scope="module")
def reports(char_models, prompts, tmp_path_factory):
    """The student against itself and against another model, as two teachers of one run (the same rollouts)."""
    teachers = [char_models["a"], char_models["b"]]
    reports = measure(char_models["a"], teachers, prompts, tmp_path_factory.mktemp("gap") / "gap.json")
    assert [r["teacher"] for r in reports] == teachers
    return reports


def test_a_model_against_itself_has_no_divergence(reports):
    r = reports[0]
    assert r["rollouts"] == 8 and r["tokens"] > 0
    assert r["log_ratio_mean"] == 0.0 and r["frac_ratio_gt_1"] == 0.0
    assert r["top1_overlap"] == r["top5_overlap"] == r["top10_overlap"] == 1.0
    # a random model is about as perplexed as a uniform guess over the vocabulary
    assert 0.3 * len(char_vocabulary()) < r["teacher_ppl"] < 3 * len(char_vocabulary())


def test_a_different_teacher_diverges(reports):
    r = reports[1]
    assert r["top1_overlap"] < 1.0 and r["log_ratio_std"] > 0.0
    assert {k: v for k, v in r.items() if k in ("rollouts", "tokens", "eos_fraction")} == {
        k: v for k, v in reports[0].items() if k in ("rollouts", "tokens", "eos_fraction")
    }  # scored on the same rollouts
    assert 0.0 < r["mismatch_ratio"] <= 1.0 and 0.0 <= r["eos_fraction"] <= 1.0
