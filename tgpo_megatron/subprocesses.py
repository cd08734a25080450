"""Helper processes (reward workers, the checkpoint writer's queue manager) must not outlive the trainer.

Kept free of heavy imports: it runs first in every spawned helper.
"""

from __future__ import annotations

import os
import signal
import sys


def die_with_parent(parent_pid: int) -> None:
    """Run in a helper process: a trainer killed with SIGKILL (preemption, OOM) must not leave it running,
    holding a core and the job's stdout. Linux kills it with its parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
