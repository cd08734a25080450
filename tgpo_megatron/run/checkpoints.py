"""Training checkpoints: written whole or not at all, found again through an atomically replaced pointer.

    <output_dir>/checkpoints/iter_0000050/student/      model + distributed-optimizer state (dist_checkpointing),
                                                        its architecture (hf_config.json) and tokenizer
                                         trainer_state.json   step, prompt-sampler position, consecutive skips
                                         rng/rank<r>.pt       each rank's RNG states
    <output_dir>/checkpoints/latest                         "iter_0000050"

A checkpoint is written into ``iter_N.tmp`` and renamed when complete; only then is ``latest`` replaced (write
a temporary file, ``os.replace``). A process killed at any point leaves ``latest`` naming the previous
complete checkpoint. The student directory also holds ``hf_config.json`` and the tokenizer's files, so
``tools/convert_megatron_to_hf.py --ckpt .../iter_0000050`` exports it as a Hugging Face directory as it is.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import shutil
from typing import Optional

import torch
import torch.distributed as dist

from tgpo_megatron.errors import UserError
from tgpo_megatron.models.checkpoint import ARCH_FILE
from tgpo_megatron.models.hf_export import copy_tokenizer, hf_config_dict
from tgpo_megatron.subprocesses import die_with_parent

log = logging.getLogger(__name__)
POINTER = "latest"


def rng_state() -> dict:
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "tracker": get_cuda_rng_tracker().get_states(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    get_cuda_rng_tracker().set_states(state["tracker"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _writer_queue_dies_with_trainer() -> None:
    """Megatron's torch_dist writer collects results through a queue served by a multiprocessing Manager
    process that it starts at the first save and never stops; a trainer killed with SIGKILL would leave that
    process behind. Serve the queue from a manager that dies with the trainer instead (same queue type)."""
    from multiprocessing.managers import SyncManager

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
        manager.start(initializer=die_with_parent, initargs=(os.getpid(),))
        filesystem_async._results_queue = manager.Queue()


class Checkpoints:
    def __init__(self, root: str, keep_last_n: int, tokenizer_dir: Optional[str] = None):
        """``tokenizer_dir``: whose tokenizer files each checkpoint carries (a conversion then needs nothing else)."""
        self.root, self.keep_last_n, self.tokenizer_dir = root, keep_last_n, tokenizer_dir
        _writer_queue_dies_with_trainer()

    def _dir(self, step: int) -> str:
        return os.path.join(self.root, f"iter_{step:07d}")

    def latest(self) -> Optional[tuple[int, str]]:
        pointer = os.path.join(self.root, POINTER)
        if not os.path.exists(pointer):
            return None
        with open(pointer) as f:
            name = f.read().strip()
        path = os.path.join(self.root, name)
        if not os.path.exists(os.path.join(path, "trainer_state.json")):
            raise UserError(f"{pointer} names {name}, which is not a complete checkpoint")
        return int(name.split("_")[-1]), path

    def save(self, step: int, student, trainer_state: dict) -> str:
        rank = dist.get_rank()
        final = self._dir(step)
        tmp = final + ".tmp"
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(os.path.join(tmp, "student"))
            os.makedirs(os.path.join(tmp, "rng"))
        dist.barrier()
        student.save(os.path.join(tmp, "student"))
        torch.save(rng_state(), os.path.join(tmp, "rng", f"rank{rank}.pt"))
        dist.barrier()
        if rank == 0:
            with open(os.path.join(tmp, "student", ARCH_FILE), "w") as f:
                json.dump(hf_config_dict(student.model.arch), f, indent=2)
            if self.tokenizer_dir:
                copy_tokenizer(self.tokenizer_dir, os.path.join(tmp, "student"))
            with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
                json.dump({"step": step, **trainer_state}, f, indent=1)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
            pointer = os.path.join(self.root, POINTER)
            with open(pointer + ".tmp", "w") as f:
                f.write(os.path.basename(final))
                f.flush()
                os.fsync(f.fileno())
            os.replace(pointer + ".tmp", pointer)
            self._prune()
        dist.barrier()
        return final

    def _prune(self) -> None:
        done = sorted(d for d in os.listdir(self.root) if d.startswith("iter_") and not d.endswith(".tmp"))
        for name in done[: -self.keep_last_n]:
            shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
        for name in os.listdir(self.root):  # leftovers of a save that was killed
            if name.endswith(".tmp") and name != POINTER + ".tmp":
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def load(self, path: str, student) -> dict:
        """Restore the student and this rank's RNG; returns the trainer state."""
        student.load(os.path.join(path, "student"))
        rng_path = os.path.join(path, "rng", f"rank{dist.get_rank()}.pt")
        if os.path.exists(rng_path):
            set_rng_state(torch.load(rng_path, weights_only=True))
        else:
            log.warning(
                "%s has no RNG state for rank %d (a different world size); RNG not restored", path, dist.get_rank()
            )
        with open(os.path.join(path, "trainer_state.json")) as f:
            return json.load(f)
