"""Multi-process tests run real torchrun jobs (gloo, CPU) of the worker scripts under workers/."""

import os
import subprocess
import sys

import pytest

WORKERS = os.path.join(os.path.dirname(__file__), "workers")


def torchrun(script: str, *args: str, nproc: int = 2, timeout: int = 600, check: bool = True):
    """Run ``workers/<script>`` under torchrun; on failure show the tail of its output."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--standalone",
        os.path.join(WORKERS, script),
        *map(str, args),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and run.returncode != 0:
        pytest.fail(f"{script} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}")
    return run
