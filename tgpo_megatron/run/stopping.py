"""A scheduler's request to checkpoint and stop: the file ``<output_dir>/STOP``, or SIGTERM.

The Slurm scripts write the file when Slurm warns that the time limit is near (``--signal=B:USR1@900``) or
preempts the job; the nemo-run launcher writes it from a timer. The trainer looks at every step boundary,
saves a checkpoint, removes the file and exits with ``EXIT_STOPPED``; the job is requeued and the same
command resumes from that checkpoint. A file is used rather than a signal to the ranks because torchrun
dies of SIGUSR1 and, on SIGTERM, kills its workers 30 s later, too soon for a large checkpoint; SIGTERM is
still honoured, for the case that a step boundary falls within that window.
"""

from __future__ import annotations

import os
import signal
from typing import Optional

import torch.distributed as dist

from tgpo_megatron.run.layout import RunDir


class StopRequests:
    def __init__(self, output_dir: str):
        self.path = RunDir(output_dir).stop
        self._signal: Optional[str] = None
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self._signal = signal.Signals(signum).name

    def reason(self, group=None) -> Optional[str]:
        """Why to stop now, agreed by every rank of ``group``: any rank's signal or a visible file counts."""
        local = self._signal or (f"{self.path} exists" if os.path.exists(self.path) else None)
        reasons: list = [None] * dist.get_world_size(group)
        dist.all_gather_object(reasons, local, group=group)
        return next((r for r in reasons if r), None)

    def clear(self) -> None:
        """Remove the file, so that the resumed run does not stop at once (rank 0: every rank has already
        seen it in :meth:`reason`)."""
        if dist.get_rank() == 0 and os.path.exists(self.path):
            os.remove(self.path)
