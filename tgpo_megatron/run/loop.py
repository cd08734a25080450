"""The step loop ``tgpo train`` and ``tgpo sft`` share: resume, metrics log, checkpoints, stop requests,
divergence, and the exit code a scheduler acts on (``tgpo_megatron/errors.py``).

    run = open_run(config, student, sampler[, pipeline])  # after building them: resume if there is a checkpoint
    step = run_steps(config, run, step_fn, after)    # step_fn(step) -> metrics (with optim/skipped)
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch.distributed as dist

from tgpo_megatron.config import Config, save_config
from tgpo_megatron.errors import (
    EXIT_BAD_INPUT,
    EXIT_CRASH,
    EXIT_DISK_FULL,
    EXIT_DIVERGED,
    EXIT_DONE,
    EXIT_STOPPED,
    DiskFull,
    TrainingDiverged,
    UserError,
    exit_on_user_error,
)
from tgpo_megatron.run.checkpoints import Checkpoints
from tgpo_megatron.run.layout import RunDir
from tgpo_megatron.run.metrics import MetricsLogger, NullLogger
from tgpo_megatron.run.stopping import StopRequests

log = logging.getLogger(__name__)


class StopRequested(Exception):
    """The scheduler asked for a checkpoint and a stop (stopping.py); the run resumes when started again."""


@dataclass
class Run:
    """Where a run starts and what it writes to: its checkpoints, the student and prompt order they hold, the
    metrics log."""

    checkpoints: Checkpoints
    student: object
    sampler: object
    logger: Union[MetricsLogger, NullLogger]
    start_step: int = 0
    """The last step of the checkpoint the run resumed from (0: a fresh run)."""
    start_skips: int = 0
    """Consecutive skipped updates at that checkpoint."""
    in_flight: Optional[object] = None
    """What else each checkpoint holds: the rollouts collected for the next step (``RolloutPipeline``)."""


def open_run(config: Config, student, sampler, in_flight=None) -> Run:
    """The run directory (config.yaml, checkpoints/) and, when it has a checkpoint, the state to resume from:
    model, optimizer, prompt order, RNG and ``in_flight``'s state (an object with ``state_dict`` and
    ``load_state_dict``). The metrics log continues after that step."""
    trainer = config.trainer
    run_dir = RunDir(trainer.output_dir)
    checkpoints = Checkpoints(run_dir.checkpoints, trainer.keep_last_n, config.student.tokenizer_path)
    rank0 = dist.get_rank() == 0
    if rank0:
        os.makedirs(checkpoints.root, exist_ok=True)
        checkpoints.remove_stale()
        run_dir.clear_exit_code()
        save_config(config, run_dir.config)
    dist.barrier()
    step, skips = 0, 0
    latest = checkpoints.resume_point()
    if latest is not None:
        state = checkpoints.load(latest[1], student)
        sampler.load_state_dict(state["sampler"])
        step, skips = state["step"], state.get("skips", 0)
        if in_flight is not None:
            in_flight.load_state_dict(state.get("in_flight"))
        log.info("resumed from %s (step %d)", latest[1], step)
    logger = (
        MetricsLogger(
            trainer.output_dir, trainer.tensorboard, trainer.wandb_project, config.to_dict(), resume_step=step
        )
        if rank0
        else NullLogger()
    )
    return Run(checkpoints, student, sampler, logger, step, skips, in_flight)


def run_steps(
    config: Config, run: Run, step_fn: Callable[[int], dict], after_step: Optional[Callable[[int], dict]] = None
) -> int:
    """Steps from where ``run`` starts to ``trainer.steps``: ``step_fn(step)`` (its metrics say whether the
    update was ``optim/skipped``), then ``after_step(step)``'s metrics (evaluations, exports), the log, and a
    checkpoint every ``save_every`` steps, at the end, on a stop request and before giving up on divergence.
    Raises :class:`StopRequested` or :class:`TrainingDiverged`; returns the last step."""
    trainer = config.trainer
    stop = StopRequests(trainer.output_dir)
    step, skips = run.start_step, run.start_skips
    while step < trainer.steps:
        step += 1
        metrics = step_fn(step)
        skips = skips + 1 if metrics["optim/skipped"] else 0
        if skips:
            log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", step, skips)
        if after_step is not None:
            metrics.update(after_step(step))
        run.logger.log(step, metrics)
        stop_reason = stop.reason()
        diverged = skips >= trainer.max_consecutive_skips
        if step % trainer.save_every == 0 or step == trainer.steps or stop_reason or diverged:
            saved = run.checkpoints.save(
                step,
                run.student,
                {"sampler": run.sampler.state_dict(), "skips": skips},
                in_flight=run.in_flight.state_dict() if run.in_flight is not None else None,
            )
        if diverged:
            raise TrainingDiverged(
                f"{skips} consecutive updates had a non-finite loss or gradient (step {step}); "
                f"the last good weights are saved in {saved}"
            )
        if stop_reason:
            stop.clear()  # also after the last step: a later run with more steps must not stop at once
            if step < trainer.steps:
                raise StopRequested(
                    f"stopped after step {step} on request ({stop_reason}); checkpoint "
                    f"{saved} saved: run the same command to resume"
                )
    return step


def run_command(prog: str, doc: str, command: Callable[[Config], object], argv=None) -> int:
    """``tgpo train``/``tgpo sft``: parse ``--config`` and overrides, run, and exit with (and record in the run
    directory, for the Slurm job) the code of the outcome."""
    from tgpo_megatron.cli import command_parser
    from tgpo_megatron.config import load_config

    p = command_parser(prog, doc)
    p.add_argument("--config", required=True, help="recipe YAML")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.steps=20 algorithm.name=grpo")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @exit_on_user_error
    def run() -> int:
        return run_recording_exit_code(command, load_config(args.config, args.overrides))

    return run()


def run_recording_exit_code(command: Callable[[Config], object], config: Config) -> int:
    """``command(config)``; returns the exit code of its outcome and records it in the run directory (for the
    Slurm job: torchrun's own code does not say which). A bad input is recorded and raised."""
    code = EXIT_CRASH  # until proven otherwise: an exception that escapes is a crash
    try:
        command(config)
        code = EXIT_DONE
    except StopRequested as e:
        log.warning("%s", e)
        code = EXIT_STOPPED
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        code = EXIT_DIVERGED
    except DiskFull as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        code = EXIT_DISK_FULL
    except (UserError, FileNotFoundError):
        code = EXIT_BAD_INPUT
        raise
    finally:
        RunDir(config.trainer.output_dir).write_exit_code(code)
    return code
