"""Training checkpoints: written whole or not at all, found again through an atomically replaced pointer.

    <output_dir>/checkpoints/iter_0000050/student/      model + distributed-optimizer state (dist_checkpointing),
                                                        its architecture (hf_config.json) and tokenizer
                                         trainer_state.json   step, prompt-sampler position, consecutive skips
                                         in_flight.pt         the rollouts collected for the next step, if any
                                                              (rollout.max_staleness: 1)
                                         rng/rank<r>.pt       each rank's RNG states
    <output_dir>/checkpoints/latest                         "iter_0000050"

A checkpoint is written into ``iter_N.tmp``; when complete, ``manifest.json`` records every file's size
(``run.manifest``), and the directory is renamed; only then is ``latest`` replaced (write a temporary file,
``os.replace``). A process killed at any point leaves ``latest`` naming the previous complete checkpoint. A
resume uses the newest checkpoint that verifies against its manifest: one that does not (a truncated or lost
file) is reported, file by file, and set aside as ``iter_N.invalid``; none that verifies is a ``UserError``
(exit 2) listing them. A save first checks that the disk has room for the previous checkpoint's bytes and a
margin, and ends with :class:`DiskFull` (exit 4: no requeue) when it does not, or when the disk filled during the
save. The student directory also holds ``hf_config.json`` and the tokenizer's files, so
``tools/convert_megatron_to_hf.py --ckpt .../iter_0000050`` exports it as a Hugging Face directory as it is.
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import random
import shutil
from typing import Optional

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from tgpo_megatron.errors import DiskFull, UserError
from tgpo_megatron.models.checkpoint import ARCH_FILE
from tgpo_megatron.models.hf_export import copy_tokenizer, hf_config_dict
from tgpo_megatron.run.manifest import (
    MANIFEST,
    POINTER,
    TRAINER_STATE,
    checkpoint_name,
    checkpoints_newest_first,
    is_legacy,
    pointer_target,
    read_manifest,
    verify,
    write_manifest,
)
from tgpo_megatron.subprocesses import die_with_parent

log = logging.getLogger(__name__)
IN_FLIGHT = "in_flight.pt"
SPACE_MARGIN = 1.1
"""A save needs the previous checkpoint's bytes times this free (the model does not shrink; metadata may grow)."""


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

    def remove_stale(self) -> None:
        """Rank 0, at start: the ``iter_N.tmp`` directories of saves that were killed."""
        for name in sorted(os.listdir(self.root)):
            if name.endswith(".tmp") and name != POINTER + ".tmp":
                log.warning("removing %s: a save that never completed", os.path.join(self.root, name))
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def resume_point(self) -> Optional[tuple[int, str]]:
        """The newest checkpoint that verifies (collective: rank 0 checks, every rank gets its answer), None
        when there is none at all. Each one skipped is logged with what is wrong and set aside."""
        found = [self._find_on_rank0() if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(found, src=0)
        kind, value = found[0]
        if kind == "invalid":
            raise UserError(value)
        return value

    def _find_on_rank0(self) -> tuple[str, object]:
        skipped = []
        named = pointer_target(self.root)
        candidates = checkpoints_newest_first(self.root)
        if named is not None and not any(os.path.basename(path) == named for _, path in candidates):
            skipped.append(f"{os.path.join(self.root, POINTER)} names {named}, which does not exist")
        for step, path in candidates:
            problems = verify(path)
            if problems and is_legacy(path):
                log.warning("%s has no %s (saved by an earlier version): used without verification", path, MANIFEST)
                problems = []
            if not problems:
                if skipped:
                    log.error(
                        "resuming from %s, the newest checkpoint that verifies; skipped:\n  %s",
                        path,
                        "\n  ".join(skipped),
                    )
                return "ok", (step, path)
            aside = path + ".invalid"
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(path, aside)
            skipped.append(f"{path} (set aside as {os.path.basename(aside)}): " + "; ".join(problems))
        if skipped:
            return "invalid", "no checkpoint verifies:\n  " + "\n  ".join(skipped)
        return "ok", None

    def save(self, step: int, student, trainer_state: dict, in_flight: Optional[dict] = None) -> str:
        """Write the checkpoint of ``step`` (collective); its path. ``in_flight``: tensors and plain values
        every rank holds alike, written by rank 0. Raises :class:`DiskFull` when the disk cannot hold it: before
        writing, where the previous checkpoint's size tells, else when a write fails."""
        try:
            self._on_rank0(self._check_space)
            return self._save(step, student, trainer_state, in_flight)
        except DiskFull:
            raise
        except CheckpointException as e:  # raised on every rank, but only the coordinator's says why
            free, full = _free(self.root), [False] * dist.get_world_size()
            dist.all_gather_object(full, _is_disk_full(e, self.root))  # every rank has measured: rank 0 may clean
            if any(full):
                self._disk_full(step, e, free)
            raise
        except Exception as e:
            if _is_disk_full(e, self.root):
                self._disk_full(step, e, _free(self.root))
            raise

    def _disk_full(self, step: int, error: BaseException, free: int) -> None:
        if dist.get_rank() == 0:  # room for the exit code and the logs; a resume would remove it anyway
            shutil.rmtree(os.path.join(self.root, checkpoint_name(step) + ".tmp"), ignore_errors=True)
        latest = pointer_target(self.root)
        kept = f"{latest} is intact and still the latest" if latest else "there is no earlier checkpoint"
        raise DiskFull(
            f"{self.root}: the disk filled while saving step {step} ({free} bytes free); {kept}. Free space or "
            "move the run directory, then run the same command to resume"
        ) from error

    def _check_space(self) -> None:
        previous = pointer_target(self.root)
        manifest = read_manifest(os.path.join(self.root, previous)) if previous else None
        if manifest is None:
            return  # the first save: its size is not known yet (a failed write still names a full disk)
        needed, free = int(manifest["bytes"] * SPACE_MARGIN), _free(self.root)
        if free < needed:
            raise DiskFull(
                f"{self.root}: {free} bytes free, a checkpoint needs about {needed} ({previous} holds "
                f"{manifest['bytes']}, plus {SPACE_MARGIN - 1:.0%}); free space or move the run directory, then "
                "run the same command to resume"
            )

    def _save(self, step: int, student, trainer_state: dict, in_flight: Optional[dict]) -> str:
        rank = dist.get_rank()
        final = os.path.join(self.root, checkpoint_name(step))
        tmp = final + ".tmp"
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(os.path.join(tmp, "student"))
            os.makedirs(os.path.join(tmp, "rng"))
        dist.barrier()
        student.save(os.path.join(tmp, "student"))
        torch.save(rng_state(), os.path.join(tmp, "rng", f"rank{rank}.pt"))
        dist.barrier()
        self._on_rank0(lambda: self._complete(tmp, final, step, student.model.arch, trainer_state, in_flight))
        return final

    def _complete(self, tmp: str, final: str, step: int, arch, trainer_state: dict, in_flight: Optional[dict]) -> None:
        """Rank 0: the small files, the manifest (read back at once: a file system that lost or cut a file says
        so now, not at the resume), the rename and the pointer; then retention."""
        with open(os.path.join(tmp, "student", ARCH_FILE), "w") as f:
            json.dump(hf_config_dict(arch), f, indent=2)
        if self.tokenizer_dir:
            copy_tokenizer(self.tokenizer_dir, os.path.join(tmp, "student"))
        with open(os.path.join(tmp, TRAINER_STATE), "w") as f:
            json.dump({"step": step, **trainer_state}, f, indent=1)
        if in_flight is not None:
            torch.save(in_flight, os.path.join(tmp, IN_FLIGHT))
        write_manifest(tmp)
        problems = verify(tmp)
        if problems:
            raise RuntimeError(f"{tmp}: the checkpoint just written does not verify: {'; '.join(problems)}")
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        pointer = os.path.join(self.root, POINTER)
        with open(pointer + ".tmp", "w") as f:
            f.write(os.path.basename(final))
            f.flush()
            os.fsync(f.fileno())
        os.replace(pointer + ".tmp", pointer)
        self._prune()

    def _on_rank0(self, work) -> None:
        """``work()`` on rank 0, and its failure raised on every rank (one rank failing alone would leave the
        others waiting at the next collective)."""
        failure, error = [None], None
        if dist.get_rank() == 0:
            try:
                work()
            except Exception as e:
                error = e
                failure = [(isinstance(e, DiskFull) or _is_disk_full(e, self.root), f"{type(e).__name__}: {e}")]
        dist.broadcast_object_list(failure, src=0)
        if error is not None:
            raise error
        if failure[0] is not None:
            disk_full, message = failure[0]
            raise (DiskFull if disk_full else RuntimeError)(f"on rank 0: {message}")

    def _prune(self) -> None:
        """Keep the newest ``keep_last_n`` (every one verified when it was saved or resumed from)."""
        for _, path in checkpoints_newest_first(self.root)[self.keep_last_n :]:
            shutil.rmtree(path, ignore_errors=True)

    def load(self, path: str, student) -> dict:
        """Restore the student and this rank's RNG; returns the trainer state (with ``in_flight`` if saved)."""
        student.load(os.path.join(path, "student"))
        rng_path = os.path.join(path, "rng", f"rank{dist.get_rank()}.pt")
        if os.path.exists(rng_path):
            set_rng_state(torch.load(rng_path, weights_only=True))
        else:
            log.warning(
                "%s has no RNG state for rank %d (a different world size); RNG not restored", path, dist.get_rank()
            )
        with open(os.path.join(path, TRAINER_STATE)) as f:
            state = json.load(f)
        if os.path.exists(os.path.join(path, IN_FLIGHT)):
            state["in_flight"] = torch.load(os.path.join(path, IN_FLIGHT), weights_only=True)
        return state


def _free(path: str) -> int:
    return shutil.disk_usage(path).free


LOW_SPACE = 256 << 20


def _is_disk_full(error: BaseException, root: str) -> bool:
    """ENOSPC anywhere in the exception's chain (or in a distributed-checkpoint report of several ranks'), or
    the torch writer's way of failing on a full disk (a short write, ``unexpected pos``, with the disk now
    nearly full)."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(e) or ("unexpected pos" in str(e) and _free(root) < LOW_SPACE):
            return True
        todo += [e.__cause__, e.__context__]
        for failure in getattr(e, "failures", {}).values():  # torch.distributed.checkpoint's CheckpointException
            todo.append(failure[0] if isinstance(failure, tuple) else failure)
    return False
