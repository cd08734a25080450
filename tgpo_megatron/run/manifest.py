"""What a complete training checkpoint holds, written when it is complete and checked before it is used.

    iter_0000050/manifest.json    {"files": {"student/__0_0.distcp": {"size": 1234}, "trainer_state.json":
                                  {"size": 80, "sha256": "..."}, ...}, "bytes": ...}

Every file is listed with its size; files up to ``CHECKSUM_MAX_BYTES`` (the metadata that says where every tensor
lies, the trainer state, the RNG states, the tokenizer) also carry a sha256. Sizes catch what goes wrong in
practice (a shard truncated by a full disk or a killed writer, a file lost); hashing the shards themselves would
cost minutes a save at 70B scale (docs/benchmarks.md, "Verifying a checkpoint"). Imports without torch:
``tgpo checkpoint verify`` runs where the launcher runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
POINTER = "latest"
PREFIX = "iter_"
CHECKSUM_MAX_BYTES = 64 << 20


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:07d}"


def checkpoint_step(name: str) -> Optional[int]:
    """The step of a checkpoint directory's name (``iter_0000050``), None for anything else."""
    digits = name.removeprefix(PREFIX)
    return int(digits) if name.startswith(PREFIX) and digits.isdigit() else None


def checkpoints_newest_first(root: str) -> list[tuple[int, str]]:
    """``(step, path)`` of every complete-looking checkpoint directory under ``root``, newest first (a save in
    progress or interrupted is ``iter_N.tmp``, a checkpoint set aside ``iter_N.invalid``: neither counts)."""
    if not os.path.isdir(root):
        return []
    found = [(checkpoint_step(name), os.path.join(root, name)) for name in os.listdir(root)]
    return sorted(((step, path) for step, path in found if step is not None), reverse=True)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(path: str) -> None:
    """List every file under the checkpoint directory ``path`` (complete: call it last), with their total."""
    files = {}
    for directory, _, names in os.walk(path):
        for name in sorted(names):
            full = os.path.join(directory, name)
            entry = {"size": os.path.getsize(full)}
            if entry["size"] <= CHECKSUM_MAX_BYTES:
                entry["sha256"] = _sha256(full)
            files[os.path.relpath(full, path)] = entry
    files.pop(MANIFEST, None)
    total = sum(entry["size"] for entry in files.values())
    with open(os.path.join(path, MANIFEST), "w") as f:
        json.dump({"files": files, "bytes": total}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def read_manifest(path: str) -> Optional[dict]:
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def verify(path: str) -> list[str]:
    """What is wrong with the checkpoint directory ``path``, one line each; empty when every file is there
    with its recorded size (and checksum, where recorded)."""
    if not os.path.isdir(path):
        return [f"{path} does not exist"]
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.exists(manifest_path):
        return [f"{MANIFEST} missing: the save never completed, or it was written before checkpoints had one"]
    manifest = read_manifest(path)
    if manifest is None or not isinstance(manifest.get("files"), dict):
        return [f"{MANIFEST} unreadable"]
    problems = []
    for name, entry in sorted(manifest["files"].items()):
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            problems.append(f"{name}: missing")
            continue
        size = os.path.getsize(full)
        if size != entry["size"]:
            problems.append(f"{name}: {size} bytes, expected {entry['size']}")
        elif "sha256" in entry and _sha256(full) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest's (same size, other content)")
    return problems


def is_legacy(path: str) -> bool:
    """A checkpoint an earlier version completed (renamed from ``.tmp``) before checkpoints had a manifest: a
    resume uses it unverified, with a warning."""
    return not os.path.exists(os.path.join(path, MANIFEST)) and os.path.exists(os.path.join(path, TRAINER_STATE))


def pointer_target(root: str) -> Optional[str]:
    """The checkpoint name ``latest`` holds, None without one."""
    try:
        with open(os.path.join(root, POINTER)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def main(argv=None) -> int:
    """``tgpo verify-checkpoints RUN_DIR``: every checkpoint of a run checked as a resume checks it (read only)."""
    import argparse

    from tgpo_megatron.run.layout import RunDir

    p = argparse.ArgumentParser(prog="tgpo verify-checkpoints", description=main.__doc__)
    p.add_argument("run_dir", help="a run directory (or its checkpoints/ directory)")
    args = p.parse_args(argv)
    root = RunDir(args.run_dir).checkpoints
    root = root if os.path.isdir(root) else args.run_dir
    found = checkpoints_newest_first(root)
    named = pointer_target(root)
    print(f"{root}: {POINTER} names {named or 'nothing'}; {len(found)} checkpoint(s)")
    resume = None
    for _, path in found:
        problems = verify(path)
        if problems and is_legacy(path):
            print(f"  {os.path.basename(path)}: no {MANIFEST} (an earlier version's): a resume uses it unverified")
            problems = []
        else:
            print(f"  {os.path.basename(path)}: " + ("ok" if not problems else "; ".join(problems)))
        resume = resume or (None if problems else os.path.basename(path))
    if found and resume is None:
        print("no checkpoint verifies: a resume would stop with exit 2")
        return 2
    print(f"a resume would start from {resume}" if resume else "no checkpoint: a run would start afresh")
    return 0
