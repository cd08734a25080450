"""Checkpoint manifests, verification, the fallback to the newest checkpoint that verifies, retention, and the
full-disk outcome (one process; the trainer's own resume through them: tests/e2e/test_faults.py)."""

import errno
import json
import logging
import os

import pytest
import torch.distributed as dist

from tgpo_megatron.errors import DiskFull, UserError
from tgpo_megatron.run import checkpoints as checkpoints_module
from tgpo_megatron.run.checkpoints import Checkpoints, _is_disk_full
from tgpo_megatron.run.manifest import MANIFEST, POINTER, checkpoint_name, verify, write_manifest


@pytest.fixture(scope="module")
def one_process_world():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def fake_checkpoint(root, step: int, shard_bytes: int = 4096, manifest: bool = True) -> str:
    """A checkpoint's files as a save leaves them (a shard, its metadata, the trainer state, an RNG state)."""
    path = os.path.join(root, checkpoint_name(step))
    os.makedirs(os.path.join(path, "student"))
    os.makedirs(os.path.join(path, "rng"))
    with open(os.path.join(path, "student", "__0_0.distcp"), "wb") as f:
        f.write(os.urandom(shard_bytes))
    for name, text in (("student/.metadata", "meta"), ("trainer_state.json", json.dumps({"step": step}))):
        with open(os.path.join(path, name), "w") as f:
            f.write(text)
    with open(os.path.join(path, "rng", "rank0.pt"), "wb") as f:
        f.write(b"rng")
    if manifest:
        write_manifest(path)
    return path


def point_at(root, step: int) -> None:
    with open(os.path.join(root, POINTER), "w") as f:
        f.write(checkpoint_name(step))


def test_a_complete_checkpoint_verifies_and_each_fault_is_named(tmp_path):
    path = fake_checkpoint(tmp_path, 4)
    manifest = json.loads(open(os.path.join(path, MANIFEST)).read())
    assert sorted(manifest["files"]) == [
        "rng/rank0.pt",
        "student/.metadata",
        "student/__0_0.distcp",
        "trainer_state.json",
    ]
    assert manifest["bytes"] == sum(e["size"] for e in manifest["files"].values()) and verify(path) == []

    os.truncate(os.path.join(path, "student", "__0_0.distcp"), 100)  # the fault: `truncate -s 100`
    with open(os.path.join(path, "student", ".metadata"), "w") as f:
        f.write("META")  # same size, other content: the checksum of a small file catches it
    os.remove(os.path.join(path, "rng", "rank0.pt"))
    assert verify(path) == [
        "rng/rank0.pt: missing",
        "student/.metadata: sha256 differs from the manifest's (same size, other content)",
        "student/__0_0.distcp: 100 bytes, expected 4096",
    ]
    assert verify(str(tmp_path / "nowhere")) == [f"{tmp_path / 'nowhere'} does not exist"]
    os.remove(os.path.join(path, MANIFEST))
    assert "manifest.json missing" in verify(path)[0]


def test_resume_falls_back_to_the_newest_checkpoint_that_verifies(tmp_path, one_process_world, caplog):
    good = fake_checkpoint(tmp_path, 2)
    bad = fake_checkpoint(tmp_path, 4)
    os.truncate(os.path.join(bad, "student", "__0_0.distcp"), 100)
    point_at(tmp_path, 4)
    with caplog.at_level(logging.ERROR):
        assert Checkpoints(str(tmp_path), keep_last_n=2).resume_point() == (2, good)
    assert not os.path.exists(bad) and os.path.isdir(bad + ".invalid")  # set aside, kept for a look
    assert "student/__0_0.distcp: 100 bytes, expected 4096" in caplog.text and "resuming from" in caplog.text


def test_a_pointer_to_a_missing_checkpoint_falls_back_too(tmp_path, one_process_world, caplog):
    good = fake_checkpoint(tmp_path, 2)
    point_at(tmp_path, 6)
    with caplog.at_level(logging.ERROR):
        assert Checkpoints(str(tmp_path), keep_last_n=2).resume_point() == (2, good)
    assert f"names {checkpoint_name(6)}, which does not exist" in caplog.text


def test_no_checkpoint_that_verifies_is_bad_input_listing_each(tmp_path, one_process_world, fault_row):
    for step in (2, 4):
        os.truncate(os.path.join(fake_checkpoint(tmp_path, step), "student", "__0_0.distcp"), 10)
    point_at(tmp_path, 4)
    with pytest.raises(UserError, match=r"no checkpoint verifies") as error:
        Checkpoints(str(tmp_path), keep_last_n=2).resume_point()
    assert str(error.value).count("10 bytes, expected 4096") == 2
    fault_row(
        "no checkpoint of the run verifies",
        "one error listing each checkpoint and what is wrong with it (each set aside as `iter_N.invalid`)",
        "nothing more: the checkpoints are kept for a look",
        2,
    )


def test_no_checkpoint_is_a_fresh_run_and_an_older_versions_checkpoint_is_used(tmp_path, one_process_world, caplog):
    assert Checkpoints(str(tmp_path), keep_last_n=2).resume_point() is None
    legacy = fake_checkpoint(tmp_path, 3, manifest=False)
    point_at(tmp_path, 3)
    with caplog.at_level(logging.WARNING):
        assert Checkpoints(str(tmp_path), keep_last_n=2).resume_point() == (3, legacy)
    assert "used without verification" in caplog.text


def test_retention_keeps_the_newest_and_never_counts_what_was_set_aside(tmp_path):
    for step in (2, 4, 6):
        fake_checkpoint(tmp_path, step)
    os.rename(fake_checkpoint(tmp_path, 8), tmp_path / (checkpoint_name(8) + ".invalid"))
    Checkpoints(str(tmp_path), keep_last_n=2)._prune()
    assert sorted(os.listdir(tmp_path)) == [checkpoint_name(4), checkpoint_name(6), checkpoint_name(8) + ".invalid"]


def test_stale_saves_are_removed_at_start(tmp_path, caplog):
    os.makedirs(tmp_path / (checkpoint_name(4) + ".tmp") / "student")
    fake_checkpoint(tmp_path, 2)
    with caplog.at_level(logging.WARNING):
        Checkpoints(str(tmp_path), keep_last_n=2).remove_stale()
    assert os.listdir(tmp_path) == [checkpoint_name(2)] and "a save that never completed" in caplog.text


def test_a_save_that_cannot_fit_stops_before_writing(tmp_path, one_process_world, monkeypatch, fault_row):
    previous = fake_checkpoint(tmp_path, 2, shard_bytes=1 << 20)
    point_at(tmp_path, 2)
    monkeypatch.setattr(checkpoints_module, "_free", lambda path: 1000)

    class NeverCalled:
        def save(self, path):
            raise AssertionError("the save started")

    with pytest.raises(DiskFull, match=r"1000 bytes free, a checkpoint needs about 115\d{4} \(iter_0000002 holds"):
        Checkpoints(str(tmp_path), keep_last_n=2).save(4, NeverCalled(), {})
    assert sorted(os.listdir(tmp_path)) == [checkpoint_name(2), POINTER] and verify(previous) == []
    fault_row(
        "too little free space for the next checkpoint (known from the previous one's size, plus 10%)",
        "one error before the save, with the bytes free and needed; nothing is written",
        "the steps since the previous checkpoint",
        4,
    )


def test_a_full_disk_is_told_apart_from_other_failures(tmp_path, monkeypatch):
    enospc = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise enospc
        except OSError as e:
            raise RuntimeError("Worker failure") from e
    except RuntimeError as wrapped:
        assert _is_disk_full(wrapped, str(tmp_path))
    from torch.distributed.checkpoint.api import CheckpointException

    worker = RuntimeError("Worker failure: [Errno 28] No space left on device")  # as Megatron's writer reports it
    assert _is_disk_full(CheckpointException("write", {1: (worker, [])}), str(tmp_path))
    short_write = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    monkeypatch.setattr(checkpoints_module, "_free", lambda path: 10 << 20)
    assert _is_disk_full(short_write, str(tmp_path))
    monkeypatch.setattr(checkpoints_module, "_free", lambda path: 100 << 30)  # the same message, a disk with room
    assert not _is_disk_full(short_write, str(tmp_path))
    assert not _is_disk_full(OSError(errno.EIO, "Input/output error"), str(tmp_path))


def test_verify_checkpoints_reports_each_checkpoint_as_a_resume_would(tmp_path, capsys):
    from tgpo_megatron.cli import main

    root = tmp_path / "checkpoints"
    fake_checkpoint(root, 2)
    os.truncate(os.path.join(fake_checkpoint(root, 4), "student", "__0_0.distcp"), 100)
    point_at(root, 4)
    assert main(["verify-checkpoints", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "iter_0000004: student/__0_0.distcp: 100 bytes, expected 4096" in out and "iter_0000002: ok" in out
    assert "a resume would start from iter_0000002" in out and os.path.isdir(root / checkpoint_name(4))  # read only
    os.truncate(os.path.join(root, checkpoint_name(2), "student", "__0_0.distcp"), 0)
    assert main(["verify-checkpoints", str(root)]) == 2
    assert "no checkpoint verifies" in capsys.readouterr().out
