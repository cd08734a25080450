"""The rollout engine on ranks of its own (``rollout.placement: separate``): the training side's handle on it and
the rollout side's loop, talking over the bridge group (``distributed.worlds``).

Every message is a broadcast from one bridge rank to all: the first training rank (bridge rank 0) sends orders
(generate these prompts, load these weights, stop) and the first rollout rank (bridge rank 1) sends the
completions back. The other training ranks are not on the bridge: the first training rank hands the
completions on within the training world, and every training rank takes part in producing the weight stream
(its gathers), of which the first alone sends each tensor on. On the rollout side every rank receives every
order and every tensor, so each rank of the engine loads the same stream, as the colocated engine's ranks do.
"""

from __future__ import annotations

import pickle
import time
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
        """``value`` from bridge rank ``root`` to every member (pickled: orders, completions, tensor headers)."""
        payload = pickle.dumps(value) if self.rank == root else b""
        size = bridge_broadcast(self.group, torch.tensor([len(payload)], dtype=torch.int64), root)
        buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if self.rank == root else None
        if buffer is None:
            buffer = torch.empty(int(size.item()), dtype=torch.uint8)
        bridge_broadcast(self.group, buffer, root)
        return value if self.rank == root else pickle.loads(buffer.numpy().tobytes())

    def tensor(self, tensor: Optional[torch.Tensor], shape, dtype, root: int) -> torch.Tensor:
        """A tensor from bridge rank ``root`` (``tensor`` there; its ``shape`` and ``dtype`` elsewhere)."""
        if self.rank != root:
            tensor = torch.empty(shape, dtype=dtype, device=self.device)
        return bridge_broadcast(self.group, tensor.to(self.device).contiguous(), root)


class RemoteEngine:
    """The training side's :class:`~tgpo_megatron.rollout.base.RolloutEngine`: the engine runs on the rollout
    ranks; its memory is theirs, so sleeping and waking do nothing here."""

    def __init__(self, hf_dir: str, side: Side, bridge: Optional[Bridge], training_group=None):
        self.side, self.bridge, self.training_group = side, bridge, training_group
        self.expected_weights = checkpoint_shapes(hf_dir)  # what the rollout ranks' engine started from

    @classmethod
    def connect(cls, hf_dir: str, side: Side) -> "RemoteEngine":
        """The handle of a training rank whose side's world is up: the first joins the bridge."""
        return cls(hf_dir, side, open_bridge(side))

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSpec) -> list[list[Completion]]:
        result = [None]
        if self.bridge is not None:
            self.bridge.objects(("generate", [list(p) for p in prompts], sampling), root=TRAINER)
            result = [self.bridge.objects(None, root=ROLLOUT)]
        if self.side.size > 1:
            dist.broadcast_object_list(result, src=0, group=self.training_group)
        return result[0]

    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> RefitStats:
        """Every training rank iterates the stream (producing it takes all of them); the first sends it on."""
        start, sent, count = time.perf_counter(), 0, 0
        if self.bridge is not None:
            self.bridge.objects(("weights", None, None), root=TRAINER)
        for name, tensor in weights:
            if self.bridge is not None:
                self.bridge.objects((name, tuple(tensor.shape), tensor.dtype), root=TRAINER)
                self.bridge.tensor(tensor, tensor.shape, tensor.dtype, root=TRAINER)
            sent, count = sent + tensor.numel() * tensor.element_size(), count + 1
        if self.bridge is not None:
            self.bridge.objects(None, root=TRAINER)  # the end of the stream
        return RefitStats(time.perf_counter() - start, sent, count)

    def sleep(self) -> None:
        pass

    def wake(self, tags: Optional[Sequence[str]] = None) -> None:
        pass

    def close(self) -> None:
        if self.bridge is not None:
            self.bridge.objects(("stop", None, None), root=TRAINER)


def serve(engine, bridge: Bridge) -> None:
    """The rollout ranks' loop: carry out the first training rank's orders until it says stop."""
    while True:
        kind, prompts, sampling = bridge.objects(None, root=TRAINER)
        if kind == "stop":
            return
        if kind == "generate":
            completions = engine.generate(prompts, sampling)
            bridge.objects(completions if bridge.rank == ROLLOUT else None, root=ROLLOUT)
        elif kind == "weights":
            engine.update_weights(_received(bridge))
        else:
            raise RuntimeError(f"unknown order {kind!r} on the bridge")


def _received(bridge: Bridge) -> Iterator[tuple[str, torch.Tensor]]:
    while (header := bridge.objects(None, root=TRAINER)) is not None:
        name, shape, dtype = header
        yield name, bridge.tensor(None, shape, dtype, root=TRAINER)


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
