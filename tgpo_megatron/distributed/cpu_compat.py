"""The explicit CPU compatibility layer for Megatron-Core 0.16.1, and its one GPU-side shim.

Megatron-Core 0.16.1 hard-codes CUDA in a handful of places (RoPE and buffers call
``torch.cuda.current_device()``, pipeline schedules allocate with ``device="cuda"``, the optimizers assert
``param.type() == "torch.cuda.FloatTensor"``, the RNG tracker saves CUDA RNG states, checkpoint saving calls
``torch.cuda.synchronize()``). ``enable_cpu_compat()`` installs the adaptation once, explicitly, and returns a
handle whose ``disable()`` restores everything it changed. It is never applied at import time and refuses to
run when CUDA is present.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Optional

import torch
from torch.overrides import TorchFunctionMode

logger = logging.getLogger(__name__)

_CPU = torch.device("cpu")
_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
    "torch.DoubleTensor": "torch.cuda.DoubleTensor",
    "torch.LongTensor": "torch.cuda.LongTensor",
    "torch.IntTensor": "torch.cuda.IntTensor",
    "torch.ByteTensor": "torch.cuda.ByteTensor",
    "torch.BoolTensor": "torch.cuda.BoolTensor",
}
_CPU_TYPE_NAMES = {v: k for k, v in _CUDA_TYPE_NAMES.items()}


def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare integer device index always means an accelerator; on CPU there is none.
    return isinstance(device, int) and not isinstance(device, bool)


class _CudaAsCpuMode(TorchFunctionMode):
    """Runs CUDA-addressed tensor creation and moves on ``target`` (the CPU), and reports CUDA type names."""

    def __init__(self, target: torch.device = _CPU):
        super().__init__()
        self.target = target

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0] if self.target == _CPU else args[0].to(self.target)
        if func is torch.Tensor.type:
            return self._tensor_type(func, args, kwargs)
        device = kwargs.get("device")
        if device is not None and _is_cuda_device(device):
            kwargs = {**kwargs, "device": self.target}
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], self.target, *args[2:])
        return func(*args, **kwargs)

    @staticmethod
    def _tensor_type(func, args, kwargs):
        dtype = args[1] if len(args) > 1 else kwargs.get("dtype")
        if dtype is None:
            name = func(*args, **kwargs)
            return _CUDA_TYPE_NAMES.get(name, name)
        if isinstance(dtype, str):
            dtype = _CPU_TYPE_NAMES.get(dtype, dtype)
        return func(args[0], dtype, *args[2:], **{k: v for k, v in kwargs.items() if k != "dtype"})


class _NoStream:
    """Stands in for CUDA streams and events: CPU execution is already ordered."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def wait_stream(self, *args, **kwargs):
        pass

    def wait_event(self, *args, **kwargs):
        pass

    def record_event(self, *args, **kwargs):
        return _NoStream()

    def record(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, other) -> float:
        return 0.0


def _no_op(*args, **kwargs):
    return None


def _cuda_patches(target: torch.device) -> list[tuple[Any, str, Any]]:
    """(object, attribute, replacement) for every CUDA entry point Megatron-Core 0.16.1 calls on CPU."""
    from megatron.core.tensor_parallel import random as mcore_random

    def set_rng_state(new_state, *args, **kwargs):
        torch.set_rng_state(new_state)

    def get_rng_state(*args, **kwargs):
        return torch.get_rng_state()

    def manual_seed(seed):
        torch.manual_seed(seed)

    from megatron.core.transformer.moe import token_dispatcher

    def splits_to_host(tensor, as_numpy=False, record_stream=False):
        # the all-to-all dispatcher turns its split sizes into numpy only for CUDA tensors; gloo's
        # all_to_all_single needs them as Python sizes
        return tensor.detach().to(_CPU).numpy() if as_numpy and torch.is_tensor(tensor) else tensor

    patches = [
        (torch.cuda, "current_device", lambda: target),
        (torch.cuda, "synchronize", _no_op),
        (torch.cuda, "empty_cache", _no_op),
        (torch.cuda, "get_rng_state", get_rng_state),
        (torch.cuda, "set_rng_state", set_rng_state),
        (torch.cuda, "manual_seed", manual_seed),
        (torch.cuda, "current_stream", lambda *a, **k: _NoStream()),
        (torch.cuda, "default_stream", lambda *a, **k: _NoStream()),
        (torch.cuda, "stream", lambda *a, **k: contextlib.nullcontext()),
        (torch.cuda, "Stream", _NoStream),
        (torch.cuda, "Event", _NoStream),
        (torch.cuda, "memory_allocated", lambda *a, **k: 0),
        (torch.cuda, "max_memory_allocated", lambda *a, **k: 0),
        (torch.cuda, "memory_reserved", lambda *a, **k: 0),
        (torch.cuda.random, "get_rng_state", get_rng_state),
        (torch.cuda.random, "set_rng_state", set_rng_state),
        (mcore_random, "_get_cuda_rng_state", get_rng_state),
        (mcore_random, "_set_cuda_rng_state", set_rng_state),
        (token_dispatcher, "maybe_move_tensor_to_cpu", splits_to_host),
        # the all-to-all dispatcher makes its copy stream once per process, from torch.cuda.Stream: by then vLLM's
        # CPU worker may have replaced that with a placeholder whose record_event returns None
        (token_dispatcher.MoEAlltoAllTokenDispatcher, "cuda_dtoh_stream", _NoStream()),
    ]
    return patches


class CpuCompat:
    """The installed compatibility layer; ``disable()`` undoes exactly what ``enable_cpu_compat`` did."""

    def __init__(self, saved: list[tuple[Any, str, Any]], mode: _CudaAsCpuMode):
        self._saved = saved
        self._mode = mode
        self.active = True

    def disable(self) -> None:
        global _ACTIVE
        if not self.active:
            return
        self._mode.__exit__(None, None, None)
        for obj, name, original in reversed(self._saved):
            setattr(obj, name, original)
        self.active = False
        _ACTIVE = None


_ACTIVE: Optional[CpuCompat] = None


def allow_moe_without_transformer_engine() -> None:
    """Megatron-Core 0.16.1's router reads ``te_general_gemm``, a name its ``moe_utils`` defines only when
    Transformer Engine imports, so every mixture-of-experts forward without TE (CPU or GPU) raises NameError.
    Defining it as None selects the router's own torch matmul, the path the code intends without TE."""
    from megatron.core.transformer.moe import moe_utils

    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None


def enable_cpu_compat(target: torch.device = _CPU) -> CpuCompat:
    """Let unmodified Megatron-Core 0.16.1 run on CPU (models, TP, PP schedules, DDP, optimizers,
    dist_checkpointing). Idempotent; refuses when CUDA is available, where nothing must be adapted.

    ``target`` is where CUDA-addressed tensors go: the CPU, or a simulated accelerator for the tests that
    check that no host tensor meets a device tensor (tests/simulated_accelerator.py)."""
    global _ACTIVE
    if _ACTIVE is not None:
        return _ACTIVE
    if torch.cuda.is_available():
        raise RuntimeError("enable_cpu_compat() is for CPU-only machines; CUDA is available here")
    saved = []
    for obj, name, replacement in _cuda_patches(target):
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, replacement)
    mode = _CudaAsCpuMode(target)
    mode.__enter__()
    _ACTIVE = CpuCompat(saved, mode)
    logger.info("Megatron-Core CPU compatibility layer enabled")
    return _ACTIVE


def cpu_compat_active() -> bool:
    return _ACTIVE is not None and _ACTIVE.active
