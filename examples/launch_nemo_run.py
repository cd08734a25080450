"""Launch `tgpo train` with nemo-run, on this machine (torchrun) or on a Slurm cluster (sbatch via pyxis).

    make launch-env    # nemo-run lives in its own environment, .venv-launch (its pins clash with vLLM's)
    PATH=$PWD/.venv/bin:$PATH .venv-launch/bin/python examples/launch_nemo_run.py \\
        --recipe examples/recipes/tiny_cpu.yaml --executor local launch.gpus_per_node=2
    .venv-launch/bin/python examples/launch_nemo_run.py --recipe examples/recipes/llama3.1_70b_tgpo.yaml \\
        --executor slurm --account ACCT --partition batch --container-image /lustre/images/tgpo.sqsh \\
        --container-mounts /lustre:/lustre,/models:/models --ssh-host login.cluster --job-dir /lustre/$USER/nemo-run \\
        trainer.output_dir=/lustre/$USER/runs/tgpo-70b

Add --dryrun to print what would run without running it. The recipe is loaded and validated here first,
`tgpo plan` checks that it fits its GPUs (the models' config.json must be readable here; --skip-plan), and
the command each node runs is rendered by tgpo_megatron/run/launch.py, which the Slurm scripts' test checks
slurm/*.sh against. On Slurm the job asks the trainer to checkpoint and stop 15 minutes before its
time limit (trainer.output_dir/STOP) and is requeued, up to --retries times, to resume.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys

from tgpo_megatron.config.memory import GIB
from tgpo_megatron.config.plan import check_fits
from tgpo_megatron.errors import UserError, exit_on_user_error
from tgpo_megatron.run.launch import TRAINING_ENV, WARN_BEFORE_TIME_LIMIT_S, TrainingLaunch, shell_join

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--recipe", required=True, help="recipe YAML (inside this repository on Slurm: it ships with the code)"
    )
    p.add_argument("--executor", choices=["local", "slurm"], required=True)
    p.add_argument("--dryrun", action="store_true", help="print what would run, run nothing")
    p.add_argument(
        "--skip-plan",
        action="store_true",
        help="submit even if `tgpo plan` says the recipe does not fit its GPUs (or cannot read the "
        "models' config.json from here)",
    )
    p.add_argument("--name", default="tgpo", help="experiment name")
    slurm = p.add_argument_group("slurm (each flag falls back to the environment variable named)")
    slurm.add_argument("--account", default=env("SBATCH_ACCOUNT"), help="$SBATCH_ACCOUNT")
    slurm.add_argument("--partition", default=env("SBATCH_PARTITION"), help="$SBATCH_PARTITION")
    slurm.add_argument("--time", default=env("SBATCH_TIMELIMIT", "04:00:00"), help="$SBATCH_TIMELIMIT")
    slurm.add_argument(
        "--container-image",
        default=env("TGPO_CONTAINER_IMAGE"),
        help="$TGPO_CONTAINER_IMAGE: an image with this project installed (pip install -e '.[gpu]')",
    )
    slurm.add_argument(
        "--container-mounts",
        default=env("TGPO_CONTAINER_MOUNTS", ""),
        help="$TGPO_CONTAINER_MOUNTS: comma-separated src:dst; must mount trainer.output_dir at its own path",
    )
    slurm.add_argument(
        "--ssh-host",
        default=env("TGPO_SSH_HOST"),
        help="$TGPO_SSH_HOST: submit through an SSH tunnel to this login node (default: submit from this machine)",
    )
    slurm.add_argument("--ssh-user", default=env("TGPO_SSH_USER", env("USER")), help="$TGPO_SSH_USER")
    slurm.add_argument(
        "--job-dir",
        default=env("TGPO_JOB_DIR"),
        help="$TGPO_JOB_DIR: where nemo-run keeps the job's code and logs (shared filesystem)",
    )
    slurm.add_argument(
        "--retries",
        type=int,
        default=20,
        help="requeues after a non-zero exit, planned stops before the time limit included",
    )
    p.add_argument("overrides", nargs="*", help="dotted recipe overrides, e.g. trainer.output_dir=/lustre/runs/x")
    return p.parse_intermixed_args(argv)  # flags may follow the overrides


def recipe_path_in_job(recipe: str, executor: str) -> str:
    """On Slurm the job runs from a copy of the repository's committed files, so the recipe is named
    relative to the repository; a recipe elsewhere must be an absolute path the job can see."""
    path = os.path.abspath(recipe)
    if executor == "slurm" and os.path.commonpath([path, REPO]) == REPO:
        return os.path.relpath(path, REPO)
    return path if executor == "slurm" else recipe


def stop_timer(stop_file: str) -> str:
    """Lines for the batch script (run on the host: the run directory must be mounted at the same path in
    the container): write the trainer's STOP file ahead of the time limit."""
    stop_file = shlex.quote(stop_file)
    return "\n".join(
        [
            f"# ask the trainer to checkpoint and stop {WARN_BEFORE_TIME_LIMIT_S} s before the time limit; the "
            "requeue below resumes it",
            f"rm -f {stop_file}  # a request left over from an earlier job",
            'tgpo_job_end=$(SLURM_TIME_FORMAT=standard squeue -h -j "$SLURM_JOB_ID" -o %e)',
            'if tgpo_job_end=$(date -d "$tgpo_job_end" +%s); then',
            f"  ( sleep $(( tgpo_job_end - $(date +%s) - {WARN_BEFORE_TIME_LIMIT_S} )) && touch {stop_file} ) &",
            "else",
            '  echo "no job end time from squeue: the trainer will not be asked to checkpoint before the time '
            'limit" >&2',
            "fi",
        ]
    )


def executor_for(args: argparse.Namespace, launch: TrainingLaunch, run):
    if args.executor == "local":
        if not args.dryrun and shutil.which("torchrun") is None:
            raise UserError(
                "no torchrun on PATH: this environment has no torch; put the training "
                "environment first, e.g. PATH=$PWD/.venv/bin:$PATH"
            )
        command = launch.torchrun_argv()
        return run.LocalExecutor(ntasks_per_node=1, env_vars=dict(TRAINING_ENV)), command
    missing = [
        flag for flag, value in (("--account", args.account), ("--container-image", args.container_image)) if not value
    ]
    if missing:
        raise UserError(f"--executor slurm needs {' and '.join(missing)} (or their environment variables)")
    launch.require_shared_output_dir()
    if args.ssh_host:
        if not args.job_dir:
            raise UserError("--ssh-host needs --job-dir: a directory on the cluster's shared filesystem")
        tunnel = run.SSHTunnel(host=args.ssh_host, user=args.ssh_user, job_dir=args.job_dir)
    else:
        tunnel = run.LocalTunnel(job_dir=args.job_dir or os.path.join(os.getcwd(), "nemo_run_jobs"))
    # one torchrun per node; srun sets SLURM_LAUNCH_NODE_IPADDR to the first node, where the batch script runs
    command = launch.torchrun_argv(rendezvous_host="$SLURM_LAUNCH_NODE_IPADDR", rendezvous_id="$SLURM_JOB_ID")
    executor = run.SlurmExecutor(
        account=args.account,
        partition=args.partition,
        time=args.time,
        nodes=launch.nodes,
        ntasks_per_node=1,
        gpus_per_node=launch.gpus_per_node,
        exclusive=True,
        mem="0",
        container_image=args.container_image,
        container_mounts=[m for m in args.container_mounts.split(",") if m],
        tunnel=tunnel,
        job_name_prefix="",
        env_vars=dict(TRAINING_ENV),
        container_env=list(TRAINING_ENV),
        setup_lines=stop_timer(launch.stop_file),
        retries=args.retries,
    )
    return executor, command


def check_plan(launch: TrainingLaunch) -> None:
    """`tgpo plan` before anything is submitted: a recipe that cannot fit its GPUs fails here, not after the
    queue."""
    try:
        peak = check_fits(launch.config).peak
    except FileNotFoundError as e:
        raise UserError(
            f"{e}; the memory check reads the models' config.json before submitting: make them "
            "readable here or pass --skip-plan"
        ) from None
    print(
        f"tgpo plan: peak {peak.name}, {peak.total / GIB:.1f} of {launch.config.launch.gpu_memory_gb:.1f} GiB per GPU",
        flush=True,
    )


@exit_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import nemo_run as run
    except ImportError:
        raise UserError(
            "nemo-run is not installed here; run `make launch-env` and use .venv-launch/bin/python"
        ) from None
    launch = TrainingLaunch.from_recipe(recipe_path_in_job(args.recipe, args.executor), args.overrides)
    executor, command = executor_for(args, launch, run)
    if not args.skip_plan:
        check_plan(launch)
    script = shell_join(command)
    split = launch.config.rollout.split(launch.config.launch.world_size, launch.gpus_per_node)
    print(
        f"{args.executor}: {launch.nodes} node(s) x {launch.gpus_per_node} processes ({split}); each node runs:\n"
        f"  {script}",
        flush=True,
    )
    task = run.Script(inline=script)
    with run.Experiment(args.name, log_level="WARN") as experiment:
        experiment.add(task, executor=executor, name="train")
        if args.dryrun:
            experiment.dryrun()
        else:
            experiment.run(detach=args.executor == "slurm")
    if args.executor == "local" and not args.dryrun:  # the experiment has waited for the run to end
        (job,) = experiment.jobs
        if str(job.state) != "SUCCEEDED":
            print(f"error: the training run ended {job.state}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
