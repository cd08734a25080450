"""`tgpo train` with a fault injected, for the robustness tests.

    torchrun --nproc-per-node 2 train_with_fault.py --fault kill_in_save:3 --config R.yaml [overrides]
    torchrun --nproc-per-node 2 train_with_fault.py --runs runs.json

The second form runs each ``{"fault": F, "config": R.yaml, "overrides": [...]}`` of the list in turn in one
launch, as ``tgpo train-many`` would (shared rollout engine and reward workers), going on after a run that fails;
each rank writes each run's stderr and log to ``<output_dir>.rank<R>.log``. The patches of a fault are undone
when its run ends.

kill_in_save:N  SIGKILLs every rank in the middle of the N-th checkpoint write (after the tensors are
                written into the temporary directory, before it is renamed and `latest` replaced);
sigterm_in_save:N  sends every rank SIGTERM at the same point (as torchrun forwards a scheduler's);
nan_loss:K      makes the loss NaN from step K on;
nan_logits:R:K  puts a NaN into the student's logits on rank R only, at step K only;
nan_teacher:R:K puts a NaN into the teacher's logits on rank R only, at step K only;
bad_teacher_id:R:K makes the teacher's argmax id of one token, on rank R only, at step K only, an id
                outside the vocabulary.
disk_full       nothing: the test puts the run directory on a file system too small for a checkpoint;
remove_dir:K:P  removes the directory P (e.g. the teacher's) at step K, on rank 0;
kill_rank:R:K   SIGKILLs rank R alone in the middle of step K's update (its loss), as a lost node would.
"""

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
from functools import partial
from unittest import mock

import torch.distributed as dist

import tgpo_megatron.run.checkpoints as checkpointing
import tgpo_megatron.teacher as teacher
import tgpo_megatron.trainer as trainer


def patches(fault: str) -> list:
    """The ``mock.patch.object`` contexts that inject ``fault``."""
    if fault == "disk_full":
        return []  # the fault is the run directory's file system, which the test makes
    kind, value = fault.split(":", 1)
    if kind in ("kill_in_save", "sigterm_in_save"):
        saves, rng_state = [0], checkpointing.rng_state
        sent = signal.SIGKILL if kind == "kill_in_save" else signal.SIGTERM

        def die_on_nth_save():  # called by the save once the student's tensors are written
            saves[0] += 1
            if saves[0] == int(value):
                os.kill(os.getpid(), sent)
            return rng_state()

        return [mock.patch.object(checkpointing, "rng_state", die_on_nth_save)]
    if kind == "nan_loss":
        compute_loss = trainer.compute_loss

        def nan_from_step(*args, step, **kwargs):
            loss, metrics = compute_loss(*args, step=step, **kwargs)
            return (loss * float("nan") if step >= int(value) else loss), metrics

        return [mock.patch.object(trainer, "compute_loss", nan_from_step)]
    if kind == "nan_logits":
        rank, at_step = map(int, value.split(":"))
        compute_loss = trainer.compute_loss

        def nan_on_one_rank(algorithm, logits, *args, step, **kwargs):
            if step == at_step and dist.get_rank() == rank:
                logits = logits.clone()
                logits[..., -1, 0] = float("nan")  # the last position of a packed row: a response token
            return compute_loss(algorithm, logits, *args, step=step, **kwargs)

        return [mock.patch.object(trainer, "compute_loss", nan_on_one_rank)]
    if kind in ("nan_teacher", "bad_teacher_id"):
        rank, at_step = map(int, value.split(":"))
        teacher_stats, calls = teacher.teacher_stats, [0]
        label = teacher.Teacher.label

        def count_steps(self, *args, **kwargs):
            calls[0] += 1
            return label(self, *args, **kwargs)

        def fault_on_one_rank(logits, **kwargs):
            now = calls[0] == at_step and dist.get_rank() == rank
            if now and kind == "nan_teacher":
                logits = logits.clone()
                logits[..., -1, 0] = float("nan")  # the last position of a packed row: a response token
            stats = teacher_stats(logits, **kwargs)
            if now and kind == "bad_teacher_id":
                stats.argmax_ids[..., -1] = kwargs["vocab_size"]
            return stats

        return [
            mock.patch.object(teacher.Teacher, "label", count_steps),
            mock.patch.object(teacher, "teacher_stats", fault_on_one_rank),
        ]
    if kind == "kill_rank":
        rank, at_step = map(int, value.split(":"))
        compute_loss = trainer.compute_loss

        def die_in_update(*args, step, **kwargs):
            if step == at_step and dist.get_rank() == rank:
                os.kill(os.getpid(), signal.SIGKILL)
            return compute_loss(*args, step=step, **kwargs)

        return [mock.patch.object(trainer, "compute_loss", die_in_update)]
    if kind == "remove_dir":  # remove_dir:K:PATH
        at_step, path = value.split(":", 1)
        compute_loss = trainer.compute_loss

        def remove_at_step(*args, step, **kwargs):
            if step == int(at_step) and dist.get_rank() == 0 and os.path.exists(path):
                shutil.rmtree(path)
            return compute_loss(*args, step=step, **kwargs)

        return [mock.patch.object(trainer, "compute_loss", remove_at_step)]
    raise SystemExit(f"unknown fault {kind}")


@contextlib.contextmanager
def run_log(path: str):
    """The run's stderr and log records to ``path`` (the launch's go on to the launch's stderr)."""
    with open(path, "w") as f, contextlib.redirect_stderr(f):
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(handler)


def run_all(path: str) -> int:
    from tgpo_megatron.config import load_config
    from tgpo_megatron.errors import exit_on_user_error
    from tgpo_megatron.rollout.vllm_engine import import_vllm
    from tgpo_megatron.run.loop import run_recording_exit_code
    from tgpo_megatron.services import Services

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(path) as f:
        runs = json.load(f)
    import_vllm()
    services = Services()
    try:
        for run in runs:
            config = load_config(run["config"], run["overrides"])
            with contextlib.ExitStack() as faults:
                for patch in patches(run["fault"]):
                    faults.enter_context(patch)
                log = f"{config.trainer.output_dir}.rank{os.environ['RANK']}.log"
                with run_log(log):
                    exit_on_user_error(
                        lambda config=config: run_recording_exit_code(partial(trainer.train, services=services), config)
                    )()
    finally:
        services.close()
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fault")
    parser.add_argument("--runs")
    args, argv = parser.parse_known_args()
    if args.runs:
        sys.exit(run_all(args.runs))
    with contextlib.ExitStack() as faults:
        for patch in patches(args.fault):
            faults.enter_context(patch)
        sys.exit(trainer.main(argv))


if __name__ == "__main__":
    main()
