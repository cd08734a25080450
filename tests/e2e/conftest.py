"""Tiny models that speak the character tokenizer of the synthetic task."""

import subprocess
import sys

import pytest

from tgpo_megatron.data.tokenizer import build_char_tokenizer, char_vocabulary
from tgpo_megatron.models.tiny import save_tiny_hf_model


def char_model(path, seed: int = 0, family: str = "qwen2") -> str:
    """A random tiny model (qwen2 unless told) with the character tokenizer (EOS id 1, PAD id 0) in one HF
    directory."""
    save_tiny_hf_model(
        str(path),
        family,
        seed=seed,
        vocab_size=len(char_vocabulary()),
        eos_token_id=1,
        pad_token_id=0,
        bos_token_id=None,
    )
    build_char_tokenizer(str(path))
    return str(path)


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def char_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("char_models")
    return {"a": char_model(root / "a", seed=0), "b": char_model(root / "b", seed=1)}
