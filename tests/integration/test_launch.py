"""The launchers: the Slurm scripts run against stand-in `srun`/`scontrol` executables, and the nemo-run
launcher's dry runs (in its own environment, .venv-launch). Both must run exactly the command that
tgpo_megatron/run/launch.py renders from the same recipe."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.model_shapes import write_config_dirs
from tgpo_megatron.errors import REQUEUED, UserError
from tgpo_megatron.run.launch import TRAINING_ENV, WARN_BEFORE_TIME_LIMIT_S, TrainingLaunch, shell_join

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPTS = {
    "slurm/tgpo_70b.sh": "examples/recipes/llama3.1_70b_tgpo.yaml",
    "slurm/tgpo_7b.sh": "examples/recipes/qwen2.5_math_7b_tgpo.yaml",
    "slurm/tgpo_7b_a3b.sh": "examples/recipes/qwen2.5_math_7b_tgpo_a3b.yaml",
}
SHELL_FILES = [
    *SCRIPTS,
    "slurm/train_job.sh",
    ".ci/run",
    "tests/gpu/run_all.sh",
    "tests/gpu/carry_wheels.sh",
    "slurm/build_image.sh",
    "tools/install_transformer_engine.sh",
]

FAKE_SRUN = r"""#!/bin/bash
# stands in for srun: records its arguments, then behaves as $FAKE_SRUN says (for `tgpo doctor`: $FAKE_DOCTOR,
# `tgpo plan`: $FAKE_PLAN, and $FAKE_RECIPE with --recipe-only)
if [[ " $* " == *" doctor "* ]]; then printf '%s\0' "$@" > "$FAKE_SRUN_ARGV.doctor"; exit "${FAKE_DOCTOR:-0}"; fi
if [[ " $* " == *" --recipe-only "* ]]; then printf '%s\0' "$@" > "$FAKE_SRUN_ARGV.plan"; exit "${FAKE_RECIPE:-0}"; fi
if [[ " $* " == *" plan "* ]]; then printf '%s\0' "$@" > "$FAKE_SRUN_ARGV.plan"; exit "${FAKE_PLAN:-0}"; fi
printf '%s\0' "$@" > "$FAKE_SRUN_ARGV"
case $FAKE_SRUN in
  ok) exit 0 ;;
  fail) exit 1 ;;
  progress_then_fail) mkdir -p "$RUN_DIR/checkpoints" && date +%N > "$RUN_DIR/checkpoints/latest" && exit 1 ;;
  trainer) while [[ ! -e $RUN_DIR/STOP ]]; do sleep 0.05; done; exit 1 ;;  # checkpoints, exits non-zero
  code:*) echo "${FAKE_SRUN#code:}" > "$RUN_DIR/exit_code"; exit 1 ;;  # the trainer's code; torchrun says 1
esac
"""
FAKE_SCONTROL = r"""#!/bin/bash
if [[ $1 == show && $2 == hostnames ]]; then printf 'node001\nnode002\n'; else echo "$*" >> "$FAKE_SCONTROL_LOG"; fi
"""


def sbatch_header(script: str) -> dict[str, str]:
    with open(os.path.join(ROOT, script)) as f:
        return dict(re.findall(r"^#SBATCH --([\w-]+)=?(\S*)", f.read(), flags=re.M))


@pytest.mark.parametrize("path", SHELL_FILES)
def test_shell_scripts_parse_and_are_shellcheck_clean(path):
    subprocess.run(["bash", "-n", path], cwd=ROOT, check=True)
    shellcheck = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    run = subprocess.run([shellcheck, "-x", path], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_sbatch_header_asks_for_the_recipes_machines_and_a_warning_before_the_time_limit(script, monkeypatch):
    monkeypatch.chdir(ROOT)
    launch = TrainingLaunch.from_recipe(SCRIPTS[script])
    header = sbatch_header(script)
    assert int(header["nodes"]) == launch.nodes and int(header["gpus-per-node"]) == launch.gpus_per_node
    assert header["ntasks-per-node"] == "1"  # one torchrun per node
    assert header["signal"] == f"B:USR1@{WARN_BEFORE_TIME_LIMIT_S}"
    assert "requeue" in header


def test_the_scripts_export_the_rendered_training_environment():
    with open(os.path.join(ROOT, "slurm/train_job.sh")) as f:
        exported = dict(re.findall(r"^export (\w+)=(\S+)$", f.read(), flags=re.M))
    assert exported == TRAINING_ENV
    # a small tensor kept across a step must not pin a freed segment that vLLM's wake needs
    assert TRAINING_ENV["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


class SlurmJob:
    """A Slurm script run as Slurm would, on the first node of an allocation of the recipe's size."""

    def __init__(self, tmp_path, script: str, srun: str):
        self.script, self.run_dir = script, tmp_path / "run"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        header = sbatch_header(script)
        self.argv_file, self.scontrol_log = tmp_path / "srun.argv", tmp_path / "scontrol.log"
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "SLURM_SUBMIT_DIR": ROOT,
            "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NAME": header["job-name"],
            "SLURM_JOB_NODELIST": "node[001-002]",
            "SLURM_JOB_NUM_NODES": header["nodes"],
            "SLURM_GPUS_PER_NODE": f"h100:{header['gpus-per-node']}",
            "RUN_DIR": str(self.run_dir),
            "CONTAINER_IMAGE": "/images/tgpo.sqsh",
            "FAKE_SRUN": srun,
            "FAKE_SRUN_ARGV": str(self.argv_file),
            "FAKE_SCONTROL_LOG": str(self.scontrol_log),
        }

    def start(self, *overrides) -> subprocess.Popen:
        return subprocess.Popen(
            ["bash", self.script, *overrides],
            cwd=ROOT,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def run(self, *overrides) -> tuple[int, str]:
        proc = self.start(*overrides)
        out, err = proc.communicate(timeout=60)
        return proc.returncode, out + err

    def srun_argv(self) -> list[str]:
        return self.argv_file.read_text().split("\0")[:-1]

    def scontrol_calls(self) -> list[str]:
        return self.scontrol_log.read_text().splitlines() if self.scontrol_log.exists() else []


@pytest.mark.parametrize("script", SCRIPTS)
def test_slurm_script_runs_the_rendered_torchrun_in_the_container(script, tmp_path, monkeypatch):
    job = SlurmJob(tmp_path, script, srun="ok")
    code, log = job.run("trainer.steps=7", "algorithm.name=grpo")
    assert code == 0, log
    assert "training finished" in log and job.scontrol_calls() == []
    # first, on one node in the container, the environment's and then the memory check of the same recipe
    for check in ("doctor", "plan"):
        argv = (tmp_path / f"srun.argv.{check}").read_text().split("\0")[:-1]
        assert argv[:2] == ["--nodes=1", "--ntasks=1"] and "--container-image=/images/tgpo.sqsh" in argv
        assert argv[argv.index("python") :] == [
            *("python", "-m", "tgpo_megatron.cli", check, "--config", SCRIPTS[script]),
            *(f"trainer.output_dir={job.run_dir}", "trainer.steps=7", "algorithm.name=grpo"),
        ]
    argv = job.srun_argv()
    start = argv.index("torchrun")
    assert argv[:start] == [
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",
        "--wait=60",
        "--container-image=/images/tgpo.sqsh",
        f"--container-mounts={ROOT}:{ROOT},{job.run_dir}:{job.run_dir},/models:/models,/data:/data",
        f"--container-workdir={ROOT}",
        f"--container-env={','.join(TRAINING_ENV)}",
    ]
    monkeypatch.chdir(ROOT)
    launch = TrainingLaunch.from_recipe(
        SCRIPTS[script], [f"trainer.output_dir={job.run_dir}", "trainer.steps=7", "algorithm.name=grpo"]
    )
    head_node = subprocess.check_output(["hostname"], text=True).strip()  # the script runs on the first node
    assert argv[start:] == launch.torchrun_argv(rendezvous_host=head_node, rendezvous_id="4242")


def test_slurm_script_asks_the_trainer_to_stop_on_the_time_limit_warning_then_requeues(tmp_path):
    job = SlurmJob(tmp_path, "slurm/tgpo_7b.sh", srun="trainer")
    proc = job.start()
    deadline = time.time() + 30
    while not job.argv_file.exists():  # the training step is running
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@900 sends
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, out + err
    assert (job.run_dir / "STOP").exists()
    assert "SIGUSR1: asking the trainer to checkpoint" in err
    assert job.scontrol_calls() == ["requeue 4242"]


def test_slurm_script_requeues_a_failed_run_a_limited_number_of_times(tmp_path):
    job = SlurmJob(tmp_path, "slurm/tgpo_7b.sh", srun="fail")
    job.env["MAX_FAILURE_RESTARTS"] = "2"
    for attempt in (1, 2):
        code, log = job.run()
        assert code == 0 and f"requeue {attempt} of 2" in log, log
    code, log = job.run()
    assert code == 1 and "failed (exit 1) after 2 requeues" in log
    assert job.scontrol_calls() == ["requeue 4242", "requeue 4242"]
    job.env["FAKE_SRUN"] = "progress_then_fail"  # a run that wrote a checkpoint before failing starts the count anew
    code, log = job.run()
    assert code == 0 and "requeue 1 of 2" in log, log


def test_slurm_script_does_not_train_where_the_environment_cannot_run_the_recipe(tmp_path):
    job = SlurmJob(tmp_path, "slurm/tgpo_7b.sh", srun="ok")
    job.env["FAKE_DOCTOR"] = "1"  # tgpo doctor: e.g. vLLM built for another torch
    code, log = job.run("trainer.steps=7")
    assert code == 1 and "tgpo doctor found problems with the environment (exit 1" in log
    assert not (tmp_path / "srun.argv.plan").exists() and not job.argv_file.exists() and job.scontrol_calls() == []


def test_slurm_script_does_not_train_a_recipe_that_does_not_fit(tmp_path):
    job = SlurmJob(tmp_path, "slurm/tgpo_7b.sh", srun="ok")
    job.env["FAKE_PLAN"] = "1"  # tgpo plan: does not fit
    code, log = job.run("trainer.steps=7")
    assert code == 1 and "tgpo plan did not pass (exit 1" in log and "--skip-plan" in log
    assert not job.argv_file.exists() and job.scontrol_calls() == []  # no training, no requeue
    code, log = job.run("--skip-plan", "trainer.steps=7")
    assert code == 0 and "--skip-plan" not in job.srun_argv() and "trainer.steps=7" in job.srun_argv()
    assert "--recipe-only" in (tmp_path / "srun.argv.plan").read_text()  # the recipe is still checked


def test_slurm_script_does_not_train_an_invalid_recipe(tmp_path):
    job = SlurmJob(tmp_path, "slurm/tgpo_7b.sh", srun="ok")
    for variable, argv in (("FAKE_PLAN", []), ("FAKE_RECIPE", ["--skip-plan"])):
        job.env[variable] = "2"  # tgpo plan: the recipe has a typo
        code, log = job.run(*argv, "trainer.stpes=7")
        assert code == 2 and "the recipe is not valid" in log
        assert not job.argv_file.exists() and job.scontrol_calls() == []


@pytest.mark.parametrize(
    "trainer_code, job_code",
    [
        (2, 2),  # bad input: a retry would fail alike
        (3, 3),  # diverged: the last good state is saved; a retry would diverge again
        (4, 4),  # disk full: the last checkpoint is intact; a retry would fill the disk again
        (75, 0),  # stopped on request (e.g. the nemo-run launcher's timer): resume
        (1, 0),  # a crash: requeued (up to MAX_FAILURE_RESTARTS)
    ],
)
def test_slurm_script_acts_on_the_trainers_exit_code(tmp_path, trainer_code, job_code):
    """As errors.REQUEUED says (the fault table in docs/reliability.md reads it)."""
    job = SlurmJob(tmp_path, "slurm/tgpo_7b.sh", srun=f"code:{trainer_code}")
    code, log = job.run()
    assert code == job_code, log
    assert job.scontrol_calls() == (["requeue 4242"] if trainer_code in REQUEUED else [])


def test_slurm_script_clears_a_stale_stop_request(tmp_path):
    job = SlurmJob(tmp_path, "slurm/tgpo_7b.sh", srun="ok")
    job.run_dir.mkdir()
    (job.run_dir / "STOP").touch()  # left by a job killed before its trainer saw it
    code, log = job.run()
    assert code == 0 and not (job.run_dir / "STOP").exists()


def test_rendering_refuses_what_cannot_run(monkeypatch):
    monkeypatch.chdir(ROOT)
    big = TrainingLaunch.from_recipe("examples/recipes/llama3.1_70b_tgpo.yaml")
    with pytest.raises(UserError, match="launch.nodes=8"):
        big.torchrun_argv()  # 8 nodes cannot be a standalone run
    with pytest.raises(UserError, match="trainer.output_dir='runs/llama3.1_70b_tgpo' is relative"):
        big.require_shared_output_dir()
    assert shell_join(["a b", "$X:1", "c"]) == "'a b' \"$X:1\" c"


# -- nemo-run (its own environment) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def launcher():
    python = os.environ.get("TGPO_LAUNCH_PYTHON", os.path.join(ROOT, ".venv-launch", "bin", "python"))
    if not os.path.exists(python):
        pytest.fail(f"{python} not found: `make launch-env` creates the launcher's environment")

    def run(tmp_path, *args, env=None):
        # the launcher reads its defaults from SBATCH_* and TGPO_* variables: only the test's own count
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("SBATCH_", "TGPO_"))}
        env = {**inherited, "NEMORUN_HOME": str(tmp_path / "nemo_run"), "COLUMNS": "300", **(env or {})}
        proc = subprocess.run(
            [python, "examples/launch_nemo_run.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return proc.returncode, proc.stdout + proc.stderr

    return run


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """config.json files of the recipes' models (real shapes), which the launcher's memory check reads."""
    dirs = write_config_dirs(tmp_path_factory.mktemp("shapes"))
    return {
        "70b": [
            f"student.hf_path={dirs['Llama-3.1-70B-aligned']}",
            f"teacher.hf_path={dirs['DeepSeek-R1-Distill-Llama-70B-aligned']}",
        ],
        "tiny": [f"student.hf_path={dirs['tiny']}", f"teacher.hf_path={dirs['tiny']}"],
    }


def test_nemo_run_local_dryrun_prints_the_rendered_torchrun(launcher, tmp_path, monkeypatch, shapes):
    overrides = ["trainer.steps=5", *shapes["tiny"]]
    code, out = launcher(
        tmp_path, "--recipe", "examples/recipes/tiny_cpu.yaml", "--executor", "local", "--dryrun", *overrides
    )
    assert code == 0, out
    assert "tgpo plan: peak" in out
    monkeypatch.chdir(ROOT)
    expected = TrainingLaunch.from_recipe("examples/recipes/tiny_cpu.yaml", overrides).torchrun_argv()
    colocated = "all 2 ranks train and run vLLM (colocated)"
    assert f"local: 1 node(s) x 2 processes ({colocated}); each node runs:\n  {shell_join(expected)}\n" in out
    assert "dryrun" in out and "--standalone" in out


SLURM_FLAGS = (
    "--dryrun",
    "--container-image",
    "/images/tgpo.sqsh",
    "--container-mounts",
    "/lustre:/lustre",
    "--ssh-host",
    "login.example",
)


def test_nemo_run_slurm_dryrun_prints_the_sbatch_script(launcher, tmp_path, monkeypatch, shapes):
    run_dir = "/lustre/me/runs/tgpo-70b"
    overrides = [f"trainer.output_dir={run_dir}", *shapes["70b"]]
    code, out = launcher(
        tmp_path,
        "--recipe",
        "examples/recipes/llama3.1_70b_tgpo.yaml",
        "--executor",
        "slurm",
        *SLURM_FLAGS,
        "--job-dir",
        str(tmp_path / "jobs"),
        *overrides,
        env={"SBATCH_ACCOUNT": "acct", "SBATCH_PARTITION": "batch"},
    )
    assert code == 0, out
    assert "tgpo plan: peak" in out
    monkeypatch.chdir(ROOT)
    launch = TrainingLaunch.from_recipe("examples/recipes/llama3.1_70b_tgpo.yaml", overrides)
    expected = launch.torchrun_argv(rendezvous_host="$SLURM_LAUNCH_NODE_IPADDR", rendezvous_id="$SLURM_JOB_ID")
    colocated = "all 64 ranks train and run vLLM (colocated)"
    assert f"slurm: 8 node(s) x 8 processes ({colocated}); each node runs:\n  {shell_join(expected)}\n" in out
    for line in (
        "#SBATCH --account=acct",
        "#SBATCH --partition=batch",
        "#SBATCH --nodes=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --exclusive",
        *(f"export {k}={v}" for k, v in TRAINING_ENV.items()),
        f"touch {run_dir}/STOP",
        "--container-image /images/tgpo.sqsh",
        "--container-env",
        "export TORCHX_MAX_RETRIES=20",
        "sbatch --requeue",
        'scontrol requeue "$SLURM_JOB_ID"',
    ):
        assert line in out, line


def test_nemo_run_launcher_errors_name_what_is_missing(launcher, tmp_path):
    code, out = launcher(
        tmp_path, "--recipe", "examples/recipes/llama3.1_70b_tgpo.yaml", "--executor", "slurm", "--dryrun"
    )
    assert code == 2 and "--executor slurm needs --account and --container-image" in out
    code, out = launcher(
        tmp_path,
        "--recipe",
        "examples/recipes/llama3.1_70b_tgpo.yaml",
        "--executor",
        "slurm",
        "--dryrun",
        "--account",
        "a",
        "--container-image",
        "i",
    )
    assert code == 2 and "trainer.output_dir='runs/llama3.1_70b_tgpo' is relative" in out
    code, out = launcher(
        tmp_path, "--recipe", "examples/recipes/tiny_cpu.yaml", "--executor", "local", "--dryrun", "trainer.stpes=3"
    )
    assert code == 2 and "unknown config key 'trainer.stpes' (did you mean trainer.steps?)" in out


def test_nemo_run_launcher_refuses_a_recipe_that_does_not_fit(launcher, tmp_path, shapes):
    base = [
        "--recipe",
        "examples/recipes/llama3.1_70b_tgpo.yaml",
        "--executor",
        "slurm",
        *SLURM_FLAGS,
        "--account",
        "a",
        "--job-dir",
        str(tmp_path / "jobs"),
        "trainer.output_dir=/lustre/x",
    ]
    code, out = launcher(tmp_path, *base, *shapes["70b"], "launch.gpu_memory_gb=40")
    assert code == 2 and "the recipe does not fit its GPUs" in out and "student train: needs" in out
    code, out = launcher(tmp_path, *base, *shapes["70b"], "launch.gpu_memory_gb=40", "--skip-plan")
    assert code == 0 and "#SBATCH --nodes=8" in out
    code, out = launcher(tmp_path, *base)  # the shipped /models paths: no config.json on this machine
    assert code == 2 and "no config.json here" in out and "--skip-plan" in out


def test_the_job_script_names_the_run_directorys_files_as_the_trainer_does():
    """slurm/train_job.sh reads the exit code, writes the stop request and watches the checkpoint pointer by
    name; the trainer's names have one owner (run/layout.py, run/checkpoints.py)."""
    from tgpo_megatron.run.checkpoints import POINTER
    from tgpo_megatron.run.layout import CHECKPOINTS, EXIT_CODE, STOP

    with open(os.path.join(ROOT, "slurm", "train_job.sh")) as f:
        script = f.read()
    for path in (f"$RUN_DIR/{STOP}", f"$RUN_DIR/{EXIT_CODE}", f"$RUN_DIR/{CHECKPOINTS}/{POINTER}"):
        assert path in script, path
