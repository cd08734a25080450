"""Exit codes a scheduler can act on, and the errors behind them.

| code | meaning | a Slurm job (slurm/train_job.sh) |
|---|---|---|
| 0 | done | ends |
| 1 | crash: anything unexpected (a bug, a lost node, an internal mismatch) | requeued, up to a limit |
| 2 | bad input (:class:`UserError`: a config, a model directory, a checkpoint, a layout) | ends, not requeued |
| 3 | diverged (:class:`TrainingDiverged`: too many non-finite updates; the last good state is saved) | ends |
| 4 | disk full (:class:`DiskFull`: a checkpoint does not fit; the previous one is intact) | ends, not requeued |
| 75 | stopped on request (a checkpoint is saved; run the same command to resume) | requeued |

Entry points turn a :class:`UserError` into one line on stderr and exit code 2, instead of a traceback.
torchrun reports any failed worker as 1, so ``tgpo train`` also writes its code to the run directory's
``exit_code`` (``run.layout``), where the job script reads it.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

EXIT_DONE, EXIT_CRASH, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_DISK_FULL, EXIT_STOPPED = 0, 1, 2, 3, 4, 75
REQUEUED = frozenset({EXIT_CRASH, EXIT_STOPPED})
"""The codes after which slurm/train_job.sh requeues the job (a crash only up to MAX_FAILURE_RESTARTS times)."""


class UserError(Exception):
    """Bad input from the user; the message names the field, file or tensor."""


class TrainingDiverged(Exception):
    """Too many consecutive non-finite updates; the last good state was saved. Retrying would diverge again."""


class DiskFull(Exception):
    """A checkpoint does not fit on its disk (the previous one is intact). Retrying would fill it again."""


def exit_on_user_error(main: Callable[..., int]) -> Callable[..., int]:
    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except (UserError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return EXIT_BAD_INPUT

    return wrapper
