"""A simulated accelerator, so that a machine without one can catch host tensors where device tensors belong.

On CPU every tensor is on the one device and gloo takes CPU tensors, so nothing fails when a batch is never
moved to the model's device or a collective gets a host tensor; on a GPU both fail at once (``F.embedding``
with CPU ids and CUDA weights; NCCL refuses CPU tensors). Inside ``simulated_accelerator()``:

- what Megatron-Core and our code address as CUDA (``device="cuda"``, ``torch.cuda.current_device()``,
  through the platform's compatibility layer, and ``Module.cuda()``) is allocated in host memory whose
  storage is recorded as "on the accelerator"; such tensors report the ``meta`` device (a device type
  nothing else here uses), so ``next(model.parameters()).device`` and everything derived from it name the
  accelerator, and ``.to(that device)`` moves a host tensor there (a copy, recorded);
- whatever a torch function computes from accelerator tensors is on the accelerator too; storage identity
  follows views and ``p.data = t`` the way device placement does;
- a torch function that mixes accelerator tensors with host tensors raises ``HostDeviceMix``, as CUDA would
  (0-dim host tensors, copies and indexing with host indices are allowed, as on CUDA);
- a tensor collective given a host tensor raises ``HostTensorInCollective``, as NCCL would; object
  collectives are exempt (torch picks their device from the group's backend itself);
- every read of an accelerator value by the host (``.item()``, ``float(t)``, ``.tolist()``, a copy to the
  host) is counted in ``host_reads``: on a GPU each waits for the stream to drain.

It sees every call made from Python (ours and Megatron-Core's) during the forward passes and outside
backward; not what C++ kernels or autograd's backward do (the gradients it makes are where their forward
tensors were), and not kernels or memory. Recorded storages are kept alive until the
context exits (so that a freed address reused by a host tensor cannot be mistaken for the accelerator's):
for tiny models and a step or two.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import sys

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

SIMULATED = torch.device("meta")
_HOST = torch.device("cpu")


class HostDeviceMix(RuntimeError):
    """A host tensor met accelerator tensors in one operation."""


class HostTensorInCollective(RuntimeError):
    """A tensor collective got a host tensor (NCCL would refuse it)."""


def _in_backward() -> bool:
    """Inside autograd's backward the engine makes the gradients in C++, unseen; they are where the forward's
    tensors were, so nothing is checked there."""
    return torch._C._current_graph_task_id() != -1


def _is_device_arg(device, kind: str) -> bool:
    return isinstance(device, (torch.device, str)) and torch.device(device).type == kind


_HOST_READS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.numpy,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__bool__,
    torch.Tensor.__index__,
}


class _Accelerator(TorchFunctionMode):
    """Records which storages are on the simulated accelerator and checks every torch function against it."""

    def __init__(self):
        super().__init__()
        self.storages: dict[int, torch.UntypedStorage] = {}
        self.inside_collective = False
        """torch.distributed reads devices to pick a backend: inside its calls tensors report the host."""
        # writes into an existing tensor (its placement stays; `p.data = t` gives p t's storage), queries
        self.in_place = {
            torch.Tensor.copy_,
            torch.Tensor.__setitem__,
            torch.Tensor.data.__set__,
            torch._has_compatible_shallow_copy_type,
            torch.Tensor.untyped_storage,
            torch.Tensor.data_ptr,
        }
        # the first argument's placement decides (host indices and dtype changes are fine on CUDA)
        self.of_first = {torch.Tensor.to, torch.Tensor.__getitem__, torch.Tensor.data.__get__}
        self.host_reads: collections.Counter = collections.Counter()
        """Reads of accelerator values by the host (``.item()``, ``float(t)``, ``.tolist()``, copies to the host),
        by the code line that made them: on a GPU each one waits for the stream to drain."""

    def count_host_read(self) -> None:
        if _in_backward():
            return
        from tgpo_megatron.distributed import cpu_compat  # its mode sits between the caller and this one

        modes = (torch.__path__[0], os.path.abspath(__file__), os.path.abspath(cpu_compat.__file__))
        frame = sys._getframe(2)
        while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(modes):
            frame = frame.f_back
        where = "?" if frame is None else f"{frame.f_code.co_filename.rsplit('site-packages/', 1)[-1]}:{frame.f_lineno}"
        self.host_reads[where] += 1

    def on_device(self, t) -> bool:
        return isinstance(t, torch.Tensor) and t.numel() > 0 and t.untyped_storage().data_ptr() in self.storages

    def record(self, out):
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.numel() > 0:
                storage = t.untyped_storage()
                self.storages[storage.data_ptr()] = storage
        return out

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if self.inside_collective:
            return func(*args, **kwargs)
        if func == torch.Tensor.device.__get__ or func == torch.Tensor.is_cuda.__get__:
            on = self.on_device(args[0])
            return (SIMULATED if on else func(*args)) if func == torch.Tensor.device.__get__ else on
        if _is_device_arg(kwargs.get("device"), SIMULATED.type):  # created on the accelerator
            return self.record(func(*args, **{**kwargs, "device": _HOST}))
        if func in (torch.Tensor.to, torch.Tensor.cuda):
            target = kwargs.get("device", args[1] if len(args) > 1 else None)
            if func is torch.Tensor.cuda or _is_device_arg(target, SIMULATED.type):
                return args[0] if self.on_device(args[0]) else self.record(args[0].clone())
            if _is_device_arg(target, "cpu") and self.on_device(args[0]):
                self.count_host_read()
                return args[0].clone()  # to the host: a copy that is not recorded
        if func is torch.Tensor.cpu and self.on_device(args[0]):
            self.count_host_read()
            return args[0].clone()
        if func in _HOST_READS and self.on_device(args[0]):
            self.count_host_read()
        if func in self.in_place or _in_backward():
            return func(*args, **kwargs)
        if func in self.of_first:
            out = func(*args, **kwargs)
            return self.record(out) if self.on_device(args[0]) else out
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on_device = [t for t in tensors if self.on_device(t)]
        host = [t for t in tensors if t.dim() > 0 and t.numel() > 0 and not self.on_device(t)]
        if on_device and host:
            name = getattr(func, "__qualname__", str(func))
            raise HostDeviceMix(f"{name}: a host tensor of shape {tuple(host[0].shape)} met tensors on the accelerator")
        out = func(*args, **kwargs)
        return self.record(out) if on_device else out


# isend/irecv stay as they are: P2POp checks their identity; batch_isend_irecv checks what they carry
_TENSOR_COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "_all_gather_base",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "_reduce_scatter_base",
    "broadcast",
    "reduce",
    "all_to_all_single",
    "send",
    "recv",
    "gather",
    "scatter",
)
_OBJECT_COLLECTIVES = ("all_gather_object", "broadcast_object_list", "gather_object", "scatter_object_list")


@contextlib.contextmanager
def simulated_accelerator():
    """Inside: CUDA-addressed tensors live on the simulated accelerator (see the module docstring). Enter it
    before ``init_distributed``, which then keeps this compatibility layer."""
    from tgpo_megatron.distributed.cpu_compat import enable_cpu_compat

    accelerator = _Accelerator()

    def call(original, *args, **kwargs):
        outer, accelerator.inside_collective = accelerator.inside_collective, True
        try:
            return original(*args, **kwargs)
        finally:
            accelerator.inside_collective = outer

    def require_device(name, tensors):
        if accelerator.inside_collective or _in_backward():  # object collectives pick their own device
            return
        host = [t for t in tensors if isinstance(t, torch.Tensor) and not accelerator.on_device(t)]
        if host:
            raise HostTensorInCollective(f"dist.{name} got a host tensor of shape {tuple(host[0].shape)}")

    def checked(name, original):
        @functools.wraps(original)
        def collective(*args, **kwargs):
            require_device(name, tree_flatten((args, kwargs))[0])
            return call(original, *args, **kwargs)

        return collective

    def object_collective(original):
        @functools.wraps(original)
        def collective(*args, **kwargs):
            return call(original, *args, **kwargs)

        return collective

    def batch_isend_irecv(original):
        @functools.wraps(original)
        def batch(ops):
            require_device("batch_isend_irecv", [op.tensor for op in ops])
            return call(original, ops)

        return batch

    saved = [
        (name, getattr(dist, name))
        for name in (*_TENSOR_COLLECTIVES, *_OBJECT_COLLECTIVES, "batch_isend_irecv")
        if hasattr(dist, name)
    ]
    for name, original in saved:
        if name in _OBJECT_COLLECTIVES:
            setattr(dist, name, object_collective(original))
        elif name == "batch_isend_irecv":
            setattr(dist, name, batch_isend_irecv(original))
        else:
            setattr(dist, name, checked(name, original))
    accelerator.__enter__()  # under the compatibility layer's mode, which is entered next
    compat = enable_cpu_compat(SIMULATED)
    try:
        yield accelerator
    finally:
        compat.disable()
        accelerator.__exit__(None, None, None)
        for name, original in saved:
            setattr(dist, name, original)
