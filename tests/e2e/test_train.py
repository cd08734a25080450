"""`tgpo train` end to end on CPU (2 processes): layouts, exact resume after SIGKILL, a kill while writing a
checkpoint, non-finite updates, every algorithm."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.e2e.conftest import char_model
from tgpo_megatron.data.synthetic import problem_rows, sample_problems, write_rows
from tgpo_megatron.run.manifest import verify
from tgpo_megatron.run.metrics import documented

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
RECIPES = os.path.join(ROOT, "examples", "recipes")
WORKERS = os.path.join(os.path.dirname(__file__), "workers")
# not reproducible by nature: wall-clock and memory
VOLATILE = ("timing/", "refit/seconds", "refit/GBps", "throughput/", "memory/")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    train = sample_problems(64, seed=1, digits=2)
    test = sample_problems(8, seed=2, digits=2, exclude=frozenset((p.a, p.b) for p in train))
    return {
        "student": char_model(root / "student", seed=0),
        "teacher": char_model(root / "teacher", seed=1),
        "train": write_rows(problem_rows(train), str(root / "train.parquet")),
        "test": write_rows(problem_rows(test), str(root / "test.parquet")),
    }


def overrides(task, out, **extra):
    """The tiny recipe pointed at this test's models and data, small enough for CI."""
    values = {
        "student.hf_path": task["student"],
        "teacher.hf_path": task["teacher"],
        "data.train_files": f"[{task['train']}]",
        "eval.datasets": f"[{{name: add2, path: {task['test']}, n: 1}}]",
        "trainer.output_dir": out,
        "trainer.steps": 3,
        "trainer.prompts_per_step": 4,
        "trainer.mini_batches": 2,
        "trainer.save_every": 3,
        "eval.every_n_steps": 3,
        "rollout.n": 4,
        "rollout.max_response_length": 16,
        "rollout.kv_cache_gb": 0.0625,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def torchrun(*args, recipe="tiny_cpu.yaml", script=None, timeout=600, check=True, nproc=2):
    target = [os.path.join(WORKERS, script)] if script else ["-m", "tgpo_megatron.cli", "train"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--standalone",
        *target,
        "--config",
        os.path.join(RECIPES, recipe),
        *map(str, args),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        pytest.fail(f"{cmd} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}")
    return run


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def stable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def assert_documented(rows):
    """Every metric a run logged has a namespace and an entry in the metric table (run.metrics.METRICS, from
    which docs/metrics.md is generated)."""
    keys = {key for row in rows for key in row} - {"step"}
    missing = sorted(k for k in keys if "/" not in k or not documented(k))
    assert not missing, f"metrics without a namespace or not in run.metrics.METRICS: {missing}"


def weights(out):
    return load_file(os.path.join(out, "hf", "model.safetensors"))


EVERY_NAMESPACE = (
    "reward/mean",
    "loss/total",
    "loss/teacher_ce",
    "gap/reverse_kl_k1",
    "gap/mismatch_ratio",
    "rollout/token_mult_prob_error",
    "refit/GBps",
    "timing/generate",
    "timing/teacher",
    "timing/train",
    "memory/rss_gb",
    "throughput/tokens_per_s",
)


ALGORITHMS = ("luffy", "tgpo_mc", "tgpo_adv", "tgpo_fwd_topk", "rkl", "kdrl", "teacher_ce")
CORRECTIONS = {  # the engine-mismatch correction through the trainer (its arithmetic: tests/unit/test_correction.py)
    "luffy": {"rollout.correction.mode": "mask"},  # the default band [1/2, 2]: on CPU nothing leaves it
    "kdrl": {"rollout.correction.mode": "tis"},
    # a band that excludes r = 1: every generated rollout is dropped, so the policy term must vanish
    "rkl": {
        "rollout.correction.mode": "sequence_mask",
        "rollout.correction.threshold": 0.5,
        "rollout.correction.lower": 0.25,
    },
}
SHARED = (*ALGORITHMS, "layouts", "tiny_cpu_pp2", "uninterrupted", "tiny_cpu")
"""The runs of ``shared_launch``, in their order."""


@pytest.fixture(scope="module")
def shared_launch(task, tmp_path_factory):
    """One `tgpo train-many` launch (with its process groups and models watched, e2e/workers/
    train_many_inspected.py) of the runs SHARED names: a step of each algorithm the other tests do not train
    (another seed), a step with other layouts (the student over two pipeline stages, a mixture-of-experts teacher
    with its experts over both ranks), the tiny_cpu_pp2 recipe, the resume test's uninterrupted run (which the
    resume test's separate launches equal), then the tiny recipe as it is. The runs of a launch share the rollout
    engine, so they share the student model. Its log is ``launch.log``."""
    root = tmp_path_factory.mktemp("shared")
    recipe = os.path.join(RECIPES, "tiny_cpu.yaml")
    one_step = {"trainer.steps": 1, "trainer.export_hf": False, "eval.every_n_steps": 0, "trainer.seed": 7}
    runs = [
        {
            "config": recipe,
            "overrides": overrides(
                task, root / a, **{**one_step, "algorithm.name": a, "algorithm.topk": 4, **CORRECTIONS.get(a, {})}
            ),
        }
        for a in ALGORITHMS
    ]
    moe_teacher = {**task, "teacher": char_model(root / "moe_teacher", seed=1, family="qwen3_moe")}
    layouts = {"student.tp": 1, "student.pp": 2, "teacher.ep": 2, "algorithm.chunk_tokens": 64}
    runs.append({"config": recipe, "overrides": overrides(moe_teacher, root / "layouts", **one_step, **layouts)})
    pp2 = os.path.join(RECIPES, "tiny_cpu_pp2.yaml")
    runs.append({"config": pp2, "overrides": overrides(task, root / "tiny_cpu_pp2")})
    uninterrupted = {"trainer.steps": 6, "trainer.save_every": 1}  # the resume test's run
    runs.append({"config": recipe, "overrides": overrides(task, root / "uninterrupted", **uninterrupted)})
    runs.append({"config": recipe, "overrides": overrides(task, root / "tiny_cpu")})
    assert [os.path.basename(dict(o.split("=", 1) for o in r["overrides"])["trainer.output_dir"]) for r in runs] == [
        *SHARED
    ]
    (root / "runs.json").write_text(json.dumps(runs))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]
    worker = [os.path.join(WORKERS, "train_many_inspected.py"), "--inspect", root / "inspect"]
    run = subprocess.run([*cmd, *worker, root / "runs.json"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-6000:]
    (root / "launch.log").write_text(run.stdout + run.stderr)
    return root


@pytest.mark.parametrize("recipe", ["tiny_cpu.yaml", "tiny_cpu_pp2.yaml"])
def test_recipe_runs_three_steps(tmp_path, recipe, shared_launch):
    out = shared_launch / recipe.removesuffix(".yaml")
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for prefix in EVERY_NAMESPACE:
        assert all(prefix in r for r in rows), prefix
    assert_documented(rows)
    assert rows[-1]["eval/add2/pass@1"] >= 0.0
    # vLLM and the Megatron student agree on the rollouts' log-probs (fp32): the refit works every step
    assert all(r["rollout/logprob_abs_diff"] < 1e-3 for r in rows)
    for path in (
        "config.yaml",
        "tensorboard",
        "checkpoints/latest",
        "eval/eval_step000003.json",
        "hf/model.safetensors",
        "hf/tokenizer.json",
    ):
        assert (out / path).exists(), path
    assert (out / "checkpoints" / "latest").read_text() == "iter_0000003"
    assert (out / "exit_code").read_text() == "0\n"
    if recipe == "tiny_cpu.yaml":  # normal runs' logs raise no false alarm (vLLM's warm-up once did)
        log = (out.parent / "launch.log").read_text()
        assert "Traceback" not in log and "step 3 |" in log, log[-3000:]
    if recipe == "tiny_cpu.yaml":  # a training checkpoint, as it is, converts to HF equal to the export
        converted = tmp_path / "converted"
        subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "tools", "convert_megatron_to_hf.py"),
                "--ckpt",
                out / "checkpoints" / "iter_0000003",
                "--out",
                converted,
            ],
            check=True,
            capture_output=True,
        )
        a, b = load_file(str(converted / "model.safetensors")), weights(out)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert (converted / "tokenizer.json").read_text() == (out / "hf" / "tokenizer.json").read_text()


def test_mixture_of_experts_teacher_at_ep2(shared_launch):
    """The paper's kind of teacher: a Qwen3-MoE (8 experts, top-2) with its experts over both ranks, beside a
    dense student over two pipeline stages (the shared launch's "layouts" run)."""
    rows = metrics(shared_launch / "layouts")
    assert [r["step"] for r in rows] == [1]
    for prefix in EVERY_NAMESPACE:
        assert all(prefix in r for r in rows), prefix
    assert all(0.0 <= r["gap/mismatch_ratio"] <= 1.0 for r in rows)


def test_mixture_of_experts_student_at_ep2(task, tmp_path):
    """A Qwen3-MoE student with its experts over both ranks: trained with its routers' load-balancing loss,
    exported to vLLM after every step (the rollouts' vLLM log-probs equal Megatron's, so each refit landed)."""
    student = char_model(tmp_path / "moe_student", seed=0, family="qwen3_moe")
    out = tmp_path / "run"
    torchrun(*overrides({**task, "student": student}, out), "student.tp=1", "student.ep=2", "eval.every_n_steps=0")
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for prefix in (*EVERY_NAMESPACE, "loss/router_aux"):
        assert all(prefix in r for r in rows), prefix
    assert_documented(rows)
    assert all(r["loss/router_aux"] > 0 for r in rows)
    assert all(r["rollout/logprob_abs_diff"] < 1e-3 for r in rows)


def test_interrupted_runs_resume_to_match_an_uninterrupted_run(task, tmp_path, shared_launch, fault_row):
    """Killed while writing the step-3 checkpoint (SIGKILL after the tensors are written, before the rename),
    its newest complete checkpoint then truncated (`truncate -s 100` of a shard), then asked to stop (the STOP
    file the Slurm scripts write before the time limit) during the resumed run, then its `latest` pointed at a
    checkpoint that does not exist and rank 1 alone killed in the middle of step 4's update, the same command
    resumes each time, from the newest checkpoint that verifies, and ends bitwise equal to an uninterrupted run:
    the shared launch's "uninterrupted", which ran after nine runs of other algorithms, seeds and layouts in the
    same processes (so nothing carries over from one run of a launch to the next: the steps of the first launch
    here, in processes of their own, already equal its steps)."""
    steps = overrides(task, tmp_path / "x", **{"trainer.steps": 6, "trainer.save_every": 1})
    full, broken = shared_launch / "uninterrupted", tmp_path / "broken"
    checkpoints = broken / "checkpoints"

    run = torchrun(
        "--fault", "kill_in_save:3", *steps, f"trainer.output_dir={broken}", script="train_with_fault.py", check=False
    )
    assert run.returncode != 0
    assert [r for r in stable(metrics(broken)) if r["step"] <= 2] == stable(metrics(full))[:2]
    assert (checkpoints / "latest").read_text() == "iter_0000002"  # the previous checkpoint is kept
    assert (checkpoints / "iter_0000003.tmp").is_dir() and not (checkpoints / "iter_0000003").exists()
    shard = checkpoints / "iter_0000002" / "student" / "__0_0.distcp"
    size = shard.stat().st_size
    os.truncate(shard, 100)  # a shard cut short (before manifests: EOFError at every requeue)

    (broken / "STOP").touch()
    run = torchrun(*steps, f"trainer.output_dir={broken}", check=False)  # the same command resumes
    assert "removing" in run.stderr and "iter_0000003.tmp: a save that never completed" in run.stderr
    assert f"student/__0_0.distcp: 100 bytes, expected {size}" in run.stderr, run.stderr[-3000:]
    assert "resumed from" in run.stderr and "iter_0000001 (step 1)" in run.stderr  # the newest that verifies
    assert (checkpoints / "iter_0000002.invalid").is_dir()  # set aside, for a look
    assert run.returncode != 0 and "stopped after step 2 on request" in run.stderr, run.stderr[-3000:]
    assert "exitcode  : 75" in run.stderr  # the trainer's "not finished, run me again"
    assert (broken / "exit_code").read_text() == "75\n"  # for the job script: torchrun itself exits 1
    assert (checkpoints / "latest").read_text() == "iter_0000002" and not (broken / "STOP").exists()
    assert not (checkpoints / "iter_0000003.tmp").exists()
    (checkpoints / "latest").write_text("iter_0000009")  # a pointer written by hand, or to a deleted checkpoint
    run = torchrun(
        "--fault", "kill_rank:1:4", *steps, f"trainer.output_dir={broken}", script="train_with_fault.py", check=False
    )
    assert "names iter_0000009, which does not exist" in run.stderr and "iter_0000002 (step 2)" in run.stderr
    assert run.returncode != 0 and "Signal 9 (SIGKILL) received" in run.stderr, run.stderr[-3000:]
    recorded = broken / "exit_code"  # the stop's 75 cleared at the start; rank 0 may have had no time to write 1
    assert not recorded.exists() or recorded.read_text() == "1\n", recorded.read_text()
    assert (checkpoints / "latest").read_text() == "iter_0000003"
    run = torchrun(*steps, f"trainer.output_dir={broken}")
    assert "iter_0000003 (step 3)" in run.stderr

    resumed, reference = metrics(broken), metrics(full)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]  # no step lost, none twice
    assert stable(resumed) == stable(reference)  # bitwise: floats compared exactly
    a, b = weights(broken), weights(full)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumed = "the run ends bitwise equal to an uninterrupted one"
    fault_row(
        "every rank SIGKILLed in the middle of a checkpoint write",
        "`latest` still names the previous checkpoint; the same command resumes from it and removes the partial "
        f"`iter_N.tmp`; {resumed}",
        "the steps since the previous checkpoint",
        1,
    )
    fault_row(
        "the newest checkpoint's shard truncated (`truncate -s 100`)",
        "reported file by file (expected and found size), set aside as `iter_N.invalid`; the run resumes from the "
        f"newest checkpoint that verifies; {resumed}",
        "the steps since the newest checkpoint that verifies",
        None,
    )
    fault_row(
        "a stop request (`RUN_DIR/STOP`, or SIGTERM) mid-run",
        f"a checkpoint at the end of the step, then exit; the same command resumes; {resumed}",
        "nothing",
        75,
    )
    fault_row(
        "one rank SIGKILLed in the middle of an update (a lost node)",
        f"every rank stops (torchrun ends the others), exit 1; the same command resumes; {resumed}",
        "the steps since the previous checkpoint",
        1,
    )
    fault_row(
        "`latest` names a checkpoint that does not exist",
        f"reported; the run resumes from the newest checkpoint that verifies; {resumed}",
        "the steps since the newest checkpoint that verifies",
        None,
    )


@pytest.fixture(scope="module")
def fault_launch(task, tmp_path_factory):
    """One launch of four runs, each with a fault (e2e/workers/train_with_fault.py --runs): NaN logits, then NaN
    teacher logits, on one rank only at step 2 (DP=2, student and teacher at TP=1); a teacher id outside the
    vocabulary on one rank at step 2 (DP=2); a NaN loss from step 2 on (the recipe's TP=2). Returns each run's
    directory and, per rank, its stderr and log."""
    root = tmp_path_factory.mktemp("faults")
    lost_teacher = shutil.copytree(task["teacher"], root / "lost_teacher")  # removed after step 1
    small_disk = root / "disk_full"  # the run directory is a 256 KiB file system: the first checkpoint cannot fit
    small_disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", small_disk], capture_output=True)
    assert mount.returncode == 0, f"mounting a tmpfs (the full-disk fault) needs root: {mount.stderr.decode()}"
    dp2 = {"student.tp": 1, "trainer.steps": 3, "trainer.export_hf": False, "eval.every_n_steps": 0}
    faults = {
        "nan_logits:1:2": dp2,
        "nan_teacher:1:2": dp2,
        "bad_teacher_id:1:2": dp2,
        "nan_loss:2": {"trainer.steps": 6, "trainer.max_consecutive_skips": 2},
        "disk_full": {**dp2, "trainer.steps": 2, "trainer.save_every": 2, "trainer.tensorboard": False},
        "sigterm_in_save:1": {**dp2, "trainer.steps": 4, "trainer.save_every": 2},
        f"remove_dir:2:{lost_teacher}": {
            **dp2,
            **{"teacher.hf_path": lost_teacher, "eval.every_n_steps": 3, "trainer.export_hf": True},
        },
    }
    runs = [
        {
            "fault": fault,
            "config": os.path.join(RECIPES, "tiny_cpu.yaml"),
            "overrides": overrides(task, root / name, **extra),
        }
        for fault, extra in faults.items()
        for name in [fault.split(":")[0]]
    ]
    (root / "runs.json").write_text(json.dumps(runs))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]
    try:
        run = subprocess.run(
            [*cmd, os.path.join(WORKERS, "train_with_fault.py"), "--runs", root / "runs.json"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, run.stderr[-6000:]

        def outcome(name):
            logs = [(root / f"{name}.rank{rank}.log").read_text() for rank in (0, 1)]
            return root / name, logs

        yield outcome
    finally:
        subprocess.run(["umount", small_disk])


def test_sigterm_during_a_save_completes_it_then_stops_at_the_next_step(fault_launch, fault_row):
    """SIGTERM (a scheduler's, forwarded by torchrun) arrives on every rank while the step-2 checkpoint is being
    written: the save completes and verifies, and the run stops after the next step with its own checkpoint
    (torchrun's 30 s before it kills its workers are for this)."""
    out, logs = fault_launch("sigterm_in_save")
    assert (out / "exit_code").read_text() == "75\n", logs[0][-3000:]
    assert "stopped after step 3 on request (SIGTERM)" in logs[0]
    assert [r["step"] for r in metrics(out)] == [1, 2, 3]
    checkpoints = out / "checkpoints"
    assert (checkpoints / "latest").read_text() == "iter_0000003"
    assert all(verify(str(checkpoints / f"iter_000000{step}")) == [] for step in (2, 3))
    fault_row(
        "SIGTERM (a scheduler's stop, through torchrun) during a checkpoint write",
        "the save completes; the run saves again at the end of the next step and stops; the same command resumes",
        "nothing",
        75,
    )


def test_a_teacher_directory_removed_during_the_run_changes_nothing(fault_launch, fault_row):
    """The teacher is read once, at the start: its directory removed at step 2 (a scratch file system cleaned,
    a model cache evicted) leaves the run, its evaluation and its export as they were."""
    out, logs = fault_launch("remove_dir")
    assert (out / "exit_code").read_text() == "0\n", logs[0][-3000:]
    assert [r["step"] for r in metrics(out)] == [1, 2, 3] and (out / "hf" / "model.safetensors").exists()
    assert not (out.parent / "lost_teacher").exists()
    fault_row(
        "the teacher's model directory removed after the start",
        "nothing: the teacher is read once, at the start; the run trains, evaluates and exports as before",
        "nothing",
        0,
    )


def test_a_full_disk_ends_the_run_with_its_own_exit_code_and_loses_nothing(fault_launch, fault_row):
    """The run directory fills during the first save (before: a torch writer's `unexpected pos` traceback, exit 1,
    requeued to fail again at the next save, the partial iter_N.tmp left behind): one error naming the directory
    and the free bytes, exit 4 (slurm/train_job.sh does not requeue it), the steps' metrics kept, the partial
    checkpoint removed."""
    out, logs = fault_launch("disk_full")
    assert (out / "exit_code").read_text() == "4\n", logs[0][-3000:]
    assert all(f"error: {out / 'checkpoints'}: the disk filled while saving step 2 (" in log for log in logs), logs
    assert [r["step"] for r in metrics(out)] == [1, 2]
    assert os.listdir(out / "checkpoints") == []
    fault_row(
        "the run directory's disk fills during a save",
        "one error naming the directory and the bytes free; the partial checkpoint is removed, the previous one "
        "and `latest` are intact, every step's metrics are kept",
        "the steps since the previous checkpoint",
        4,
    )


def test_non_finite_updates_are_skipped_then_the_run_stops_with_the_last_good_state(fault_launch, fault_row):
    out, logs = fault_launch("nan_loss")
    assert "error: 2 consecutive updates had a non-finite loss or gradient (step 3)" in logs[0]
    assert "update skipped" in logs[0] and (out / "exit_code").read_text() == "3\n"  # diverged
    rows = metrics(out)
    assert [(r["step"], r["optim/skipped"]) for r in rows] == [(1, 0.0), (2, 1.0), (3, 1.0)]
    assert (out / "checkpoints" / "latest").read_text() == "iter_0000003"
    fault_row(
        "a non-finite loss or gradient at every step (divergence)",
        "each update skipped with a warning; after `trainer.max_consecutive_skips` in a row the last good state is "
        "saved and the run stops with one error",
        "nothing (no update was applied)",
        3,
    )


@pytest.mark.parametrize("fault", ["nan_logits", "nan_teacher"])
def test_a_nan_on_one_rank_skips_the_update_on_every_rank(fault_launch, fault, fault_row):
    """DP=2 (student and teacher at TP=1): only rank 1 sees the NaN, at step 2. Raising there would end (or,
    under NCCL, hang) the job; instead every rank skips that update and the run goes on."""
    out, logs = fault_launch(fault)
    assert (out / "exit_code").read_text() == "0\n", logs[0][-3000:]
    assert [(r["step"], r["optim/skipped"]) for r in metrics(out)] == [(1, 0.0), (2, 1.0), (3, 0.0)]
    assert all("update skipped" in log for log in logs)
    whose = {"nan_logits": "the student's", "nan_teacher": "the teacher's"}[fault]
    fault_row(
        f"a NaN in {whose} logits on one rank, at one step",
        "that update is skipped on every rank alike, with a warning; the run goes on",
        "one update",
        None,
    )


def test_a_teacher_id_outside_the_vocabulary_on_one_rank_stops_every_rank_with_one_error(fault_launch, fault_row):
    """DP=2: only rank 1's teacher replica produces the bad id, at step 2. Checked on the gathered values, it
    stops both ranks with the same error and exit code 2 (checked inside rank 1's loss, rank 0 would wait in the
    next collective until the timeout)."""
    out, logs = fault_launch("bad_teacher_id")
    assert (out / "exit_code").read_text() == "2\n", logs[0][-3000:]
    error = "error: the teacher gave teacher_ids 105 for rollout"
    assert all(log.count(error) == 1 for log in logs), logs  # once per rank
    assert [r["step"] for r in metrics(out)] == [1]
    fault_row(
        "the teacher gives a token id outside the vocabulary, on one rank",
        "every rank stops with the same one-line error naming the rollout and the id",
        "the steps since the last checkpoint",
        2,
    )


def test_each_run_of_a_launch_frees_its_models_and_groups_and_warms_exactly_the_groups_it_uses(shared_launch):
    """At real scale a run's student is tens of GiB and each NCCL communicator 0.5-1.5 GiB: a run must leave
    nothing behind for the next (vLLM's engine freezes the GC heap; Megatron's DDP and optimizer form cycles
    through autograd's C++ graph; Megatron destroys only its gloo groups), and every communicator a run uses
    must exist before vLLM measures the free memory, with none made for a one-rank group."""
    assert all((shared_launch / name / "exit_code").read_text() == "0\n" for name in SHARED)
    for rank in (0, 1):
        runs = json.loads((shared_launch / f"inspect.{rank}.json").read_text())
        assert len(runs) == len(SHARED)
        assert [run["previous_models_alive"] for run in runs[1:]] == [[False, False]] * (len(runs) - 1)
        assert len({run["groups_at_start"] for run in runs[1:]}) == 1  # the process-group count does not grow
        for run in runs:
            warmed = {tuple(g) for g in run["warmed"]}
            used = {tuple(g) for g in run["used_after_warm_up"]}
            assert used <= warmed, f"used, never warmed (ranks, id): {sorted(used - warmed)}"
            assert all(len(g) > 2 for g in warmed)  # ranks and the group's id: no one-rank group
            assert run["created_after_warm_up"] == []


def test_every_pass_takes_the_loss_head_chunk_of_the_recipe(shared_launch):
    """``algorithm.chunk_tokens`` (the "layouts" run sets 64) reaches the teacher's statistics, the student's old
    log-probs and the training loss, not only the last; tgpo plan reads it too (tests/unit/test_plan.py)."""
    chunks = [{}] * len(SHARED)
    for rank in (0, 1):  # at PP=2 only the last stage computes log-probs and the loss
        runs = json.loads((shared_launch / f"inspect.{rank}.json").read_text())
        chunks = [{**merged, **run["chunk_tokens"]} for merged, run in zip(chunks, runs)]
    passes = {"teacher", "old log-probs", "loss"}
    layouts = SHARED.index("layouts")
    assert chunks[layouts] == {name: [64] for name in passes}
    assert all(c == {name: [256] for name in passes} for i, c in enumerate(chunks) if i != layouts)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_trains(shared_launch, algorithm):
    """grpo runs in the demo and tgpo_reg in the recipe tests. luffy (one rollout per group replaced by the
    row's solution) runs with its default aggregation, Dr. GRPO's (each response's token sum over the response
    budget): the non-default aggregation through the trainer too (the modes' arithmetic is checked against
    float64 in tests/unit/test_losses.py)."""
    out = shared_launch / algorithm
    (row,) = metrics(out)
    assert_documented([row])
    assert row["optim/skipped"] == 0.0 and row["optim/grad_norm"] > 0.0 and 0.0 < row["optim/grad_clip_coeff"] <= 1.0
    if algorithm == "luffy":  # the traces are the task's solutions: correct, and not generated by vLLM
        assert 0.0 < row["loss/off_policy_prob"] < 1.0 and row["reward/all_correct"] < 1.0
        assert row["reward/none_correct"] == 0.0 and row["rollout/logprob_abs_diff"] < 0.1
    term = {"tgpo_mc": "loss/teacher_ce", "tgpo_fwd_topk": "loss/teacher_fkl_topk", "kdrl": "loss/kl_k2"}
    if algorithm in term:
        assert row[term[algorithm]] > 0.0
    # vLLM and the trainer agree to about 1e-6 per token in fp32 on CPU
    assert 0.0 <= row["rollout/kl_k3"] < 1e-6 and row["rollout/token_mult_prob_error"] < 1.0001
    if algorithm not in CORRECTIONS:
        assert not any(key.startswith("correction/") for key in row)
    elif algorithm == "rkl":
        assert row["correction/sequence_share_masked"] == 1.0 and row["correction/weight_max"] == 0.0
        assert row["loss/pg"] == 0.0  # the weights reach the loss head
    else:
        assert row["correction/token_share_changed"] == 0.0
        assert abs(row["correction/weight_mean"] - 1.0) < 1e-5 and abs(row["correction/weight_max"] - 1.0) < 1e-5


def test_a_layout_that_does_not_fit_is_one_clear_error(task, tmp_path):
    (tmp_path / "run").mkdir()  # as the Slurm job makes it
    run = torchrun(*overrides(task, tmp_path / "run", **{"teacher.pp": 3}), check=False)
    assert run.returncode != 0 and (tmp_path / "run" / "exit_code").read_text() == "2\n"
    assert "error: teacher layout (teacher.tp=1, teacher.pp=3): pp=3 does not divide num_hidden_layers=2" in run.stderr


def test_nemo_run_local_launch_trains(task, tmp_path):
    """examples/launch_nemo_run.py --executor local runs the rendered torchrun for real (the launcher in its
    own environment, torchrun from the training one) and reports the run's outcome in its exit code."""
    python = os.path.join(ROOT, ".venv-launch", "bin", "python")
    env = {
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
        "NEMORUN_HOME": str(tmp_path / "nemo_run"),
    }
    out = tmp_path / "run"
    launch = [
        python,
        os.path.join(ROOT, "examples", "launch_nemo_run.py"),
        "--recipe",
        os.path.join(RECIPES, "tiny_cpu.yaml"),
        "--executor",
        "local",
    ]
    args = overrides(task, out, **{"trainer.steps": 1, "eval.every_n_steps": 0, "trainer.export_hf": False})
    run = subprocess.run([*launch, *args], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert [r["step"] for r in metrics(out)] == [1]
    # a layout the model cannot take fails before anything is launched (the memory check reads the layouts)
    refused = subprocess.run([*launch, *args, "teacher.pp=3"], env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "teacher layout (teacher.tp=1, teacher.pp=3)" in refused.stderr
    # a run that fails once launched is reported as such
    failed = subprocess.run(
        [*launch, *args, "--skip-plan", "teacher.pp=3"], env=env, capture_output=True, text=True, timeout=600
    )
    assert failed.returncode == 1 and "the training run ended FAILED" in failed.stderr


def test_two_training_ranks_and_a_rollout_rank_train_as_the_colocated_recipe(task, tmp_path, shared_launch):
    """3 processes: the student at TP=2 on two training ranks, vLLM on a third, against the shared launch's run of
    the same recipe colocated on 2 processes (vLLM as 2 replicas there, 1 here: per-request seeds make the
    samples independent of the replicas)."""
    out = tmp_path / "separate"
    torchrun(*overrides(task, out, **{"rollout.placement": "separate", "rollout.ranks": 1}), nproc=3)
    rows, reference = metrics(out), metrics(shared_launch / "tiny_cpu")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert stable(rows) == stable(reference)
    a, b = weights(out), weights(shared_launch / "tiny_cpu")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
