"""Device and backend selection: CUDA + NCCL on a machine with a GPU, where nothing in Megatron-Core is adapted;
CPU + gloo otherwise, with the compatibility layer of ``cpu_compat`` enabled by ``init_distributed``."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from tgpo_megatron.distributed.cpu_compat import enable_cpu_compat


@dataclass(frozen=True)
class Platform:
    """Where this process computes: ``device`` for tensors, ``backend`` for ``torch.distributed``."""

    device: torch.device
    backend: str

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def detect_platform() -> Platform:
    """CUDA + NCCL when a GPU is visible, CPU + gloo otherwise."""
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return Platform(torch.device("cuda", local_rank % torch.cuda.device_count()), "nccl")
    return Platform(torch.device("cpu"), "gloo")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str, platform: Optional[Platform] = None) -> torch.dtype:
    """``auto`` is bfloat16 on GPU and float32 on CPU (where bfloat16 matmuls are slow and parity is loose)."""
    if name == "auto":
        return torch.bfloat16 if (platform or detect_platform()).is_cuda else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def init_distributed(platform: Optional[Platform] = None, timeout_minutes: int = 30) -> Platform:
    """Initialise the default process group from torchrun/srun variables (a 1-rank group without them).

    On CPU this also enables the compatibility layer, since every Megatron-Core code path needs it there.
    """
    platform = platform or detect_platform()
    if platform.is_cuda:
        torch.cuda.set_device(platform.device)
    else:
        enable_cpu_compat()
    if not dist.is_initialized():
        # a plain `python` launch is a 1-rank world; spelled out in the environment because vLLM's
        # in-process launcher reads it there
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        dist.init_process_group(
            backend=platform.backend,
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    return platform


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
