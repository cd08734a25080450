"""Tiny models that speak the character tokenizer of the synthetic task."""

import subprocess
import sys

import pytest

from tgpo_megatron.models.tiny import save_char_model


def char_model(path, seed: int = 0, family: str = "qwen2") -> str:
    return save_char_model(str(path), family, seed=seed)


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def char_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("char_models")
    return {"a": char_model(root / "a", seed=0), "b": char_model(root / "b", seed=1)}
