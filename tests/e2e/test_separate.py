"""`tgpo train` with vLLM on a rank of its own (``rollout.placement: separate``, 2 processes: one training rank,
one rollout rank): at ``max_staleness: 0`` bitwise the colocated run; at 1, each step's rollouts from the weights
of the step before it, and resumes after a stop request and after a SIGKILL bitwise equal to an uninterrupted
run. (Three processes, the student at TP = 2: tests/e2e/test_train.py, against its shared launch.)"""

import os
import subprocess
import sys

import pytest
import torch

from tests.e2e.test_train import RECIPES, assert_documented, metrics, overrides, stable, task, torchrun, weights

__all__ = ["task"]  # the fixture, shared with test_train's helpers

SEPARATE = {"student.tp": 1, "rollout.placement": "separate", "rollout.ranks": 1}
STALE = {**SEPARATE, "rollout.max_staleness": 1, "trainer.steps": 4, "trainer.save_every": 1}


def test_a_rollout_rank_of_its_own_trains_as_the_colocated_engine(task, tmp_path):
    """At ``max_staleness: 0`` against the same recipe in one process with its engine colocated: the same
    rollouts, metrics and weights, bitwise (the same kernels compute both; only the process the engine runs in
    differs)."""
    one = {"student.tp": 1}
    colocated, separate = tmp_path / "colocated", tmp_path / "separate"
    cmd = [sys.executable, "-m", "tgpo_megatron.cli", "train", "--config", os.path.join(RECIPES, "tiny_cpu.yaml")]
    run = subprocess.run([*cmd, *overrides(task, colocated, **one)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    torchrun(*overrides(task, separate, **SEPARATE))
    rows = metrics(separate)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["refit/bytes"] > 0
    assert [r["rollout/weight_version"] for r in rows] == [0, 1, 2]
    assert all(r["rollout/staleness"] == 0 for r in rows)
    assert stable(rows) == stable(metrics(colocated))
    a, b = weights(separate), weights(colocated)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (separate / "exit_code").read_text() == "0\n"


@pytest.fixture(scope="module")
def one_step_stale(task, tmp_path_factory):
    """The uninterrupted run at ``max_staleness: 1`` (4 steps, a checkpoint after each)."""
    out = tmp_path_factory.mktemp("stale") / "uninterrupted"
    torchrun(*overrides(task, out, **STALE))
    return out


def test_with_staleness_one_each_step_trains_on_rollouts_of_the_weights_before(one_step_stale):
    rows = metrics(one_step_stale)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # step 1's rollouts are generated before any update; step k's (k >= 2) during step k - 1's update
    assert [r["rollout/weight_version"] for r in rows] == [0, 0, 1, 2]
    assert [r["rollout/staleness"] for r in rows] == [0, 1, 1, 1]
    assert all(r["timing/wait_rollouts"] >= 0 and r["timing/rollout_generate"] > 0 for r in rows)
    assert_documented(rows)
    assert (one_step_stale / "checkpoints" / "iter_0000004" / "in_flight.pt").exists()  # step 5's, for a longer run
    assert (one_step_stale / "exit_code").read_text() == "0\n"


def test_with_staleness_one_a_stopped_then_killed_run_resumes_bitwise(task, tmp_path, one_step_stale, fault_row):
    """A stop request after step 1 (its checkpoint holds step 2's rollouts, generated during step 1's update),
    then the training rank SIGKILLed in step 3's update (the checkpoint of step 2 holds step 3's): the same
    command resumes each time and ends bitwise equal to the uninterrupted run."""
    out = tmp_path / "interrupted"
    args = overrides(task, out, **STALE)
    out.mkdir()
    (out / "STOP").touch()
    run = torchrun(*args, check=False)
    assert "stopped after step 1 on request" in run.stderr, run.stderr[-3000:]
    assert (out / "exit_code").read_text() == "75\n"
    run = torchrun("--fault", "kill_rank:0:3", *args, script="train_with_fault.py", check=False)
    assert "iter_0000001 (step 1)" in run.stderr and "Signal 9 (SIGKILL) received" in run.stderr, run.stderr[-3000:]
    assert (out / "checkpoints" / "latest").read_text() == "iter_0000002"
    run = torchrun(*args)
    assert "iter_0000002 (step 2)" in run.stderr
    resumed, reference = metrics(out), metrics(one_step_stale)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert stable(resumed) == stable(reference)
    a, b = weights(out), weights(one_step_stale)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumed = "the run resumes on the rollouts it had collected and ends bitwise equal to an uninterrupted one"
    fault_row(
        "a stop request with the next step's rollouts generated ahead (`rollout.max_staleness: 1`)",
        f"the checkpoint holds them with their weight version (`in_flight.pt`); {resumed}",
        "nothing",
        75,
    )
    fault_row(
        "the training rank SIGKILLed while the rollout rank generates the next step (`rollout.max_staleness: 1`)",
        f"torchrun ends the rollout rank too, exit 1; the same command resumes from the previous checkpoint; {resumed}",
        "the steps since the previous checkpoint",
        1,
    )
