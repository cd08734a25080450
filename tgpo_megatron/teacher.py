"""The frozen teacher: its own Megatron-Core layout and process groups, forward-only, returning only ids and a
few floats per response token (never logits).

The teacher runs teacher forcing on prompt ⊕ student response through Megatron's schedule. Its replicas
(world / (TP × PP)) split the step's rollouts by tokens and pack them into micro-batches; each replica's last
stage produces, per response token, the argmax id and log π_T(y_t) (always, for the gap metrics), plus what
the algorithm needs (``Algorithm.teacher``): a sampled id or the renormalised top-K. The results are
gathered so every rank holds them for all rollouts. On GPU the weights live in page-locked host memory of
exactly their size except while the teacher runs.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from tgpo_megatron.batching import Rollout, plan_micro_batches
from tgpo_megatron.config import AlgorithmConfig, ModelConfig
from tgpo_megatron.losses import Algorithm, teacher_stats
from tgpo_megatron.losses.coefficients import CHUNK_TOKENS
from tgpo_megatron.models import build_model
from tgpo_megatron.models.pipeline import forward_gathered


@dataclass(frozen=True)
class TeacherRequest:
    """What the teacher computes per response token beyond its argmax ŷ_t and log π_T(y_t): as the run's
    algorithm needs (``Algorithm.teacher``), resolved once per run by :meth:`for_algorithm`."""

    topk: int = 0
    """The renormalised top-K (``teacher_topk_ids``/``teacher_topk_probs``) when > 0."""
    sample_temperature: Optional[float] = None
    """An id sampled at this temperature (``teacher_sampled_ids``) when given."""

    @classmethod
    def for_algorithm(cls, algorithm: Algorithm, config: AlgorithmConfig) -> TeacherRequest:
        return cls(
            topk=config.topk if "topk" in algorithm.teacher else 0,
            sample_temperature=config.teacher_sample_temperature if "sampled" in algorithm.teacher else None,
        )


class Teacher:
    def __init__(
        self,
        config: ModelConfig,
        pg,
        dtype: torch.dtype,
        token_budget: int,
        offload: bool,
        packed: bool = True,
        seed: int = 0,
        chunk_tokens: int = CHUNK_TOKENS,
    ):
        """``chunk_tokens``: of the statistics' loss head (``algorithm.chunk_tokens``)."""
        self.pg, self.token_budget, self.packed, self.chunk_tokens = pg, token_budget, packed, chunk_tokens
        self.model = build_model(config, pg, dtype, seed=seed).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.vocab_size = self.model.arch.vocab_size
        self.device = next(self.model.parameters()).device
        self.offload = offload and self.device.type == "cuda"
        if self.offload:
            self._host, unpin = host_copies(list(self.model.parameters()), pin=page_lock)
            weakref.finalize(self, unpin)
            self._release()

    @property
    def groups(self) -> list:
        """The process groups this model's collectives use (``parallel.warm_up_communicators``); its results
        are gathered over the world."""
        pg = self.pg
        return [pg.tp, pg.pp] + ([pg.ep, pg.tp_ep] if self.model.arch.moe is not None else [])

    def _fetch(self) -> None:
        """Weights to the GPU for a forward (asynchronous copies from pinned memory)."""
        for p, host in zip(self.model.parameters(), self._host):
            p.data = host.to(self.device, non_blocking=True)

    def _release(self) -> None:
        """Weights back to their host copies: frozen, so nothing is copied back, the GPU copies are freed."""
        for p, host in zip(self.model.parameters(), self._host):
            p.data = host

    @torch.no_grad()
    def label(
        self, rollouts: Sequence[Rollout], request: TeacherRequest = TeacherRequest(), seed: int = 0
    ) -> list[dict[str, torch.Tensor]]:
        """Every rollout's per-token values (``batching.PER_TOKEN``): ``teacher_ids`` and ``teacher_logp``, and
        what ``request`` adds; on every rank. ``seed``: of the sampled ids."""
        # every replica runs as many micro-batches (empty ones if need be): with expert parallelism the
        # replicas exchange tokens inside every MoE layer, so one replica's forward needs all the others'
        plan = plan_micro_batches([r.length for r in rollouts], self.pg.dp.size(), self.token_budget, self.packed)
        groups = plan[self.pg.dp.rank()] if rollouts else []
        index = itertools.count()

        def consume(logits, mb):
            stats = teacher_stats(
                logits,
                vocab_size=self.vocab_size,
                tp_group=self.pg.tp,
                ids=[mb.labels],
                topk=request.topk,
                sample_temperature=request.sample_temperature,
                seed=seed + next(index),
                chunk_tokens=self.chunk_tokens,
            )
            out = {"teacher_ids": stats.argmax_ids.int(), "teacher_logp": stats.token_logps[0]}
            if stats.sampled_ids is not None:
                out["teacher_sampled_ids"] = stats.sampled_ids.int()
            if stats.topk_ids is not None:
                out.update(teacher_topk_ids=stats.topk_ids.int(), teacher_topk_probs=stats.topk_probs)
            return out

        if self.offload and groups:
            self._fetch()
        values = forward_gathered(
            self.model, self.pg, rollouts, consume, groups, device=self.device, packed=self.packed
        )
        if self.offload and groups:
            self._release()
        # int32 on the wire, long ids for the loss's gathers
        return [
            {key: tensor.long() if tensor.dtype == torch.int32 else tensor for key, tensor in value.items()}
            for value in values
        ]


def host_copies(
    tensors: Sequence[torch.Tensor], pin: Optional[Callable[[torch.Tensor], Callable[[], None]]] = None
) -> tuple[list[torch.Tensor], Callable[[], None]]:
    """Copies of ``tensors`` in host memory, as views of one flat buffer per dtype of exactly their size, and the
    function that undoes ``pin`` (e.g. :func:`page_lock`) on each buffer."""
    out: list = [None] * len(tensors)
    unpins = []
    for dtype in {t.dtype for t in tensors}:
        indices = [i for i, t in enumerate(tensors) if t.dtype == dtype]
        flat = torch.empty(sum(tensors[i].numel() for i in indices), dtype=dtype)
        if pin is not None:
            unpins.append(pin(flat))
        offset = 0
        for i in indices:
            n = tensors[i].numel()
            out[i] = flat[offset : offset + n].view(tensors[i].shape)
            out[i].copy_(tensors[i])
            offset += n
    return out, lambda: [unpin() for unpin in unpins]


def page_lock(buffer: torch.Tensor) -> Callable[[], None]:
    """Page-lock a host buffer in place (``cudaHostRegister``), for asynchronous copies to the GPU, at its exact
    size: PyTorch's pinned allocator rounds every block up to a power of two (``CachingHostAllocator``), so a
    70B teacher's 16.4 GiB per rank would take 32. Returns the function that unlocks it."""
    cudart = torch.cuda.cudart()
    address = buffer.data_ptr()
    torch.cuda.check_error(cudart.cudaHostRegister(address, buffer.numel() * buffer.element_size(), 0))
    return lambda: torch.cuda.check_error(cudart.cudaHostUnregister(address))
