"""`tools/prepare_data.py split` on a small LUFFY-layout validation file written here."""

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tgpo_megatron.data.synthetic import write_rows
from tgpo_megatron.errors import UserError
from tgpo_megatron.prepare_data import samples_for, split_eval_sets

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "prepare_data.py")


def luffy_row(source: str, problem: str, answer: str) -> dict:
    return {
        "data_source": source,
        "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": problem}],
        "reward_model": {"style": "rule", "ground_truth": answer},
        "ability": "math",
    }


@pytest.fixture
def validation(tmp_path):
    rows = (
        [luffy_row("aime24", f"aime problem {i}", str(i)) for i in range(3)] * 2  # each problem twice
        + [luffy_row("math500", f"math problem {i}", str(i)) for i in range(4)]
        + [luffy_row("amc", "amc problem", "7"), luffy_row("amc", "amc problem", "8")]  # same text, two answers
        + [luffy_row("olympiad_bench", "olympiad problem", "1")]
    )
    return write_rows(rows, str(tmp_path / "valid.all.parquet"))


def test_one_file_per_benchmark_each_problem_once_with_the_authors_n(validation, tmp_path):
    entries = {e["name"]: e for e in split_eval_sets(validation, str(tmp_path / "eval"))}
    assert list(entries) == ["aime24", "math500", "amc", "olympiad_bench"]
    assert [(e["problems"], e["duplicates_dropped"], e["n"]) for e in entries.values()] == [
        (3, 3, 32),
        (4, 0, 1),
        (2, 0, 32),
        (1, 0, 1),
    ]
    aime = pq.read_table(entries["aime24"]["path"]).to_pylist()
    assert [r["reward_model"]["ground_truth"] for r in aime] == ["0", "1", "2"]
    assert aime[0]["prompt"][1]["content"] == "aime problem 0"


@pytest.mark.parametrize(
    "name, n",
    [
        ("aime24", 32),
        ("AIME_2025", 32),
        ("amc23", 32),
        ("math500", 1),
        ("minerva", 1),
        ("olympiad_bench", 1),
        ("gpqa_diamond", 1),
    ],
)
def test_samples_per_problem(name, n):
    assert samples_for(name) == n


def test_cli_prints_the_recipe_entries_and_refuses_rows_without_a_benchmark(validation, tmp_path):
    run = subprocess.run(
        [sys.executable, TOOL, "split", "--input", validation, "--out", tmp_path / "eval", "--n", "math500=4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert f"- {{name: math500, path: {tmp_path / 'eval' / 'math500.parquet'}, n: 4}}" in run.stdout
    bad = write_rows([{"prompt": "p", "reward_model": {"ground_truth": "1"}}], str(tmp_path / "bad.parquet"))
    with pytest.raises(UserError, match="row 1: no 'data_source'"):
        split_eval_sets(bad, str(tmp_path / "out"))
