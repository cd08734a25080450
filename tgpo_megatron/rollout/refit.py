"""Checking a weight stream against what the rollout engine holds, before and while it is loaded.

The engine starts from a Hugging Face directory; its safetensors headers say which tensors (names, shapes)
the engine expects. A refit is refused before any tensor moves when the student's export plan does not match
(a different model, a vocabulary padded differently, a missing tensor), and the stream is checked tensor by
tensor as a safety net: a mismatch raises :class:`RefitError` naming the tensor.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator, Sequence

import torch

from tgpo_megatron.models.bridge import SafetensorsReader
from tgpo_megatron.rollout.base import RefitStats


class RefitError(RuntimeError):
    """A weight stream that does not fit the rollout engine's model; the message names the tensor. An internal
    mismatch between our bridge and vLLM's model, not bad input: it exits as a crash."""


def checkpoint_shapes(hf_dir: str) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every tensor of an HF directory, read from the safetensors headers only."""
    reader = SafetensorsReader(hf_dir)
    return {name: tuple(reader.get_slice(name).get_shape()) for name in reader.weight_map}


def _check_tensor(name: str, shape: Sequence[int], expected: dict[str, tuple[int, ...]]) -> None:
    if name not in expected:
        raise RefitError(f"refit: tensor {name!r} is not a weight of the rollout model")
    if tuple(shape) != expected[name]:
        raise RefitError(f"refit: tensor {name!r} has shape {tuple(shape)}, the rollout model expects {expected[name]}")


def check_plan(plan: Sequence[tuple[str, Sequence[int]]], expected: dict[str, tuple[int, ...]]) -> None:
    """Raise :class:`RefitError` unless ``plan`` covers exactly the expected tensors with their shapes."""
    seen = set()
    for name, shape in plan:
        _check_tensor(name, shape, expected)
        if name in seen:
            raise RefitError(f"refit: tensor {name!r} is sent twice")
        seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise RefitError(f"refit: {len(missing)} weights of the rollout model are not sent, e.g. {missing[0]!r}")


class CheckedStream:
    """Wraps a weight stream: checks each tensor against ``expected`` and counts what passed through."""

    def __init__(self, weights: Iterable[tuple[str, torch.Tensor]], expected: dict[str, tuple[int, ...]]):
        self._weights, self._expected = weights, expected
        self.bytes = self.tensors = 0
        self._start = time.perf_counter()

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        received = set()
        for name, tensor in self._weights:
            _check_tensor(name, tensor.shape, self._expected)
            received.add(name)
            self.bytes += tensor.numel() * tensor.element_size()
            self.tensors += 1
            yield name, tensor
        missing = sorted(set(self._expected) - received)
        if missing:
            raise RefitError(f"refit: the stream ended without {len(missing)} weights, e.g. {missing[0]!r}")

    def stats(self) -> RefitStats:
        return RefitStats(time.perf_counter() - self._start, self.bytes, self.tensors)
