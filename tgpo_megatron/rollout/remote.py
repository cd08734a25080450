"""The rollout engine on ranks of its own (``rollout.placement: separate``): the training side's handle on it and
the rollout side's loop, talking over the bridge group (``distributed.worlds``).

Every message is a broadcast from one bridge rank to all: the first training rank (bridge rank 0) sends orders
(generate these prompts, load these weights, stop) and the first rollout rank (bridge rank 1) sends the
completions back. The other training ranks are not on the bridge: the first training rank hands the
completions on within the training world, and every training rank takes part in producing the weight stream
(its gathers), of which the first alone sends it on, in buckets of whole tensors. On the rollout side every rank
receives every order and every bucket, so each rank of the engine loads the same stream, as the colocated
engine's ranks do.

An order to generate returns at once (:meth:`RemoteEngine.submit`); the completions are taken when the trainer
asks for them (:meth:`RemoteEngine.collect`), so the rollout ranks generate while the training ranks train
(``rollout.max_staleness: 1``). Until then the rollout ranks wait in their reply.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist

from tgpo_megatron.distributed.worlds import Side, bridge_broadcast, bridge_group
from tgpo_megatron.rollout.base import Completion, RefitStats, SamplingSpec
from tgpo_megatron.rollout.refit import checkpoint_shapes

TRAINER, ROLLOUT = 0, 1
"""The bridge ranks that send: the first training rank (orders, weights), the first rollout rank (results)."""


class Bridge:
    """Objects and tensors broadcast over the bridge group (every member calls every method in the same order)."""

    def __init__(self, group, rank: int, device: torch.device):
        self.group, self.rank, self.device = group, rank, device

    def objects(self, value, root: int):
        """``value`` from bridge rank ``root`` to every member (pickled: orders, completions, bucket headers)."""
        payload = pickle.dumps(value) if self.rank == root else b""
        size = bridge_broadcast(self.group, torch.tensor([len(payload)], dtype=torch.int64), root)
        buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if self.rank == root else None
        if buffer is None:
            buffer = torch.empty(int(size.item()), dtype=torch.uint8)
        bridge_broadcast(self.group, buffer, root)
        return value if self.rank == root else pickle.loads(buffer.numpy().tobytes())

    def bucket(self, tensors: Optional[list[tuple[str, torch.Tensor]]], root: int) -> list[tuple[str, torch.Tensor]]:
        """Named tensors from bridge rank ``root`` in one broadcast of their bytes (``tensors`` there, ``None``
        elsewhere); the received tensors are views of one buffer on this rank's device, each at an offset
        aligned to ``ALIGN`` bytes."""
        sending = self.rank == root
        header = self.objects([(n, tuple(t.shape), t.dtype) for n, t in tensors] if sending else None, root)
        offsets = [0]
        for _, shape, dtype in header:
            offsets.append(offsets[-1] + -(-_nbytes(shape, dtype) // ALIGN) * ALIGN)
        flat = torch.zeros(offsets[-1], dtype=torch.uint8, device=self.device)
        if sending:
            for (_, tensor), start in zip(tensors, offsets):
                data = tensor.to(self.device).contiguous().reshape(-1).view(torch.uint8)
                flat[start : start + data.numel()].copy_(data)
        bridge_broadcast(self.group, flat, root)
        if sending:
            return tensors
        return [
            (name, flat[start : start + _nbytes(shape, dtype)].view(dtype).reshape(shape))
            for (name, shape, dtype), start in zip(header, offsets)
        ]


ALIGN = 64
"""Each tensor of a bucket starts at a multiple of this many bytes, so that any dtype's view of it is aligned."""


def _nbytes(shape, dtype) -> int:
    return torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()


@dataclass
class Report:
    """What the rollout side says with each batch of completions."""

    loads: int
    """Weight streams it had loaded when it generated them (the trainer checks its own count against it)."""
    generate_s: float
    """Its time generating them."""
    wait_s: float
    """Its time waiting for the training side since it finished the previous batch (for orders, for its reply
    to be taken, for the weights to start)."""


class RemoteEngine:
    """The training side's :class:`~tgpo_megatron.rollout.base.RolloutEngine`: the engine runs on the rollout
    ranks; its memory is theirs, so sleeping and waking do nothing here."""

    def __init__(self, hf_dir: str, side: Side, bridge: Optional[Bridge], bucket_bytes: int):
        """``bucket_bytes``: the weights go in buckets of about this size (``rollout.transfer_bucket_mb``)."""
        self.side, self.bridge, self.bucket_bytes = side, bridge, bucket_bytes
        self.expected_weights = checkpoint_shapes(hf_dir)  # what the rollout ranks' engine started from
        self.pending = False
        """An order is in progress on the rollout ranks (submitted, its completions not yet collected)."""
        self.last_report: Optional[Report] = None
        self.collect_wait_s = 0.0
        """The training side's wait in the last :meth:`collect` (0 when the completions were there)."""

    @classmethod
    def connect(cls, hf_dir: str, side: Side, bucket_bytes: int) -> "RemoteEngine":
        """The handle of a training rank whose side's world is up: the first joins the bridge."""
        return cls(hf_dir, side, open_bridge(side), bucket_bytes)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSpec) -> list[list[Completion]]:
        self.submit(prompts, sampling)
        return self.collect()

    def submit(self, prompts: Sequence[Sequence[int]], sampling: SamplingSpec) -> None:
        """Order completions (collective over the training ranks, like every call); returns at once."""
        if self.pending:
            raise RuntimeError("the rollout ranks have an order in progress: collect its completions first")
        if self.bridge is not None:
            self.bridge.objects(("generate", [list(p) for p in prompts], sampling), root=TRAINER)
        self.pending = True

    def collect(self) -> list[list[Completion]]:
        """The completions of the order in progress, on every training rank; waits for them if need be."""
        if not self.pending:
            raise RuntimeError("no order in progress on the rollout ranks")
        start = time.perf_counter()
        result = [None]
        if self.bridge is not None:
            result = [self.bridge.objects(None, root=ROLLOUT)]
        if self.side.size > 1:
            dist.broadcast_object_list(result, src=0)  # within the training side's world
        self.pending = False
        self.collect_wait_s = time.perf_counter() - start
        completions, self.last_report = result[0]
        return completions

    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> RefitStats:
        """Every training rank iterates the stream (producing it takes all of them); the first sends it on, in
        buckets, each sent once it holds ``bucket_bytes``."""
        if self.pending:
            raise RuntimeError("the rollout ranks are generating: collect their completions before a refit")
        start, sent, count = time.perf_counter(), 0, 0
        bucket, held = [], 0
        if self.bridge is not None:
            self.bridge.objects(("weights", None, None), root=TRAINER)
        for name, tensor in weights:
            size = tensor.numel() * tensor.element_size()
            sent, count = sent + size, count + 1
            if self.bridge is None:
                continue
            bucket.append((name, tensor))
            held += size
            if held >= self.bucket_bytes:
                self._send(bucket)
                bucket, held = [], 0
        if self.bridge is not None:
            if bucket:
                self._send(bucket)
            self.bridge.objects(None, root=TRAINER)  # the end of the stream
        return RefitStats(time.perf_counter() - start, sent, count)

    def _send(self, bucket: list[tuple[str, torch.Tensor]]) -> None:
        self.bridge.objects("bucket", root=TRAINER)
        self.bridge.bucket(bucket, root=TRAINER)

    def sleep(self) -> None:
        pass

    def wake(self, tags: Optional[Sequence[str]] = None) -> None:
        pass

    def close(self) -> None:
        if self.pending:
            self.collect()  # the rollout ranks are in their reply
        if self.bridge is not None:
            self.bridge.objects(("stop", None, None), root=TRAINER)


def serve(engine, bridge: Bridge) -> None:
    """The rollout ranks' loop: carry out the first training rank's orders until it says stop."""
    loads, waited = 0, 0.0
    while True:
        start = time.perf_counter()
        kind, prompts, sampling = bridge.objects(None, root=TRAINER)
        waited += time.perf_counter() - start
        if kind == "stop":
            return
        if kind == "generate":
            start = time.perf_counter()
            completions = engine.generate(prompts, sampling)
            report = Report(loads, time.perf_counter() - start, waited)
            start, waited = time.perf_counter(), 0.0
            bridge.objects((completions, report) if bridge.rank == ROLLOUT else None, root=ROLLOUT)
            waited += time.perf_counter() - start  # until the training side took them
        elif kind == "weights":
            engine.update_weights(_received(bridge))
            loads += 1
        else:
            raise RuntimeError(f"unknown order {kind!r} on the bridge")


def _received(bridge: Bridge) -> Iterator[tuple[str, torch.Tensor]]:
    while bridge.objects(None, root=TRAINER) == "bucket":
        yield from bridge.bucket(None, root=TRAINER)


def open_bridge(side: Side) -> Optional[Bridge]:
    """This rank's end of the bridge (None off it), on the device and backend of its side's world."""
    group = bridge_group(side, dist.get_backend())
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return None if group is None else Bridge(group, side.bridge_rank, device)


def serve_rollouts(config, side: Side) -> None:
    """A rollout rank's whole job: start the recipe's engine in the rollout world (random weights: the first
    order is a refit), then serve the training side until it says stop."""
    from tgpo_megatron.data.tokenizer import eos_token_ids, load_tokenizer
    from tgpo_megatron.distributed.platform import init_distributed
    from tgpo_megatron.rollout.vllm_engine import VLLMEngine

    init_distributed()
    tokenizer = load_tokenizer(config.student.tokenizer_path)
    engine = VLLMEngine.from_config(
        config.rollout,
        config.student,
        max_model_len=config.data.max_prompt_length + config.rollout.max_response_length,
        eos_token_ids=eos_token_ids(tokenizer, config.student.hf_path),
        seed=config.trainer.seed,
        placeholder_weights=True,
    )
    try:
        serve(engine, open_bridge(side))
    finally:
        engine.close()  # last: vLLM's teardown destroys the default process group
