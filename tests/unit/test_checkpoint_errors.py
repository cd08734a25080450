"""A missing or half-written checkpoint directory is named in a one-line error before any collective."""

import pytest

from tgpo_megatron.models.checkpoint import CheckpointError, check_checkpoint_dir


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        check_checkpoint_dir(str(tmp_path / "nope"))


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "common.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="metadata.json missing"):
        check_checkpoint_dir(str(tmp_path))


def test_truncated(tmp_path):
    (tmp_path / "metadata.json").write_text(
        '{"sharded_backend": "torch_dist", "sharded_backend_version": 1, '
        '"common_backend": "torch", "common_backend_version": 1}'
    )
    with pytest.raises(CheckpointError, match="truncated"):
        check_checkpoint_dir(str(tmp_path))
