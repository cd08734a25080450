"""Token statistics from vocabulary-sharded logits, in one chunked pass, without gathering the vocabulary.

``token_stats`` gives, with gradients, log π(y) for any number of id tensors (the sampled token, the
teacher's token, the teacher's top-K) and the entropy H(π(·|s_t)), from the *same* logits: one max and one
sum all-reduce per chunk of tokens over the TP group, and a hand-written backward that recomputes the softmax
chunk by chunk. Peak extra memory is two ``[chunk, V/TP]`` fp32 buffers, never a copy of the logits.

``teacher_stats`` gives the teacher-side quantities (no gradient): the global argmax over all shards (local
max plus one gather), the top-K ids with renormalised probabilities, a sample at temperature T that is the
same for every TP size given the same seed, and log π_T of given ids.

Columns at or beyond ``vocab_size`` (TP padding) never win an argmax, are never sampled and add exactly 0
to every softmax. Neither non-finite logits nor ids outside ``[0, vocab_size)`` are an error here: they give
non-finite statistics (NaN log-probabilities; on the teacher side still valid ids), which every rank sees
the same way (through the TP reductions and the gradient norm, or the gathered teacher values), so the
trainer skips the update everywhere; raising on the one rank that saw them would leave the others waiting in
a collective, and checking ids would read them back from the GPU in every micro-batch. Collectives take the
TP group as an argument; ``None`` means an unsharded vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from tgpo_megatron.losses.coefficients import CHUNK_TOKENS


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 math for low-precision logits; float64 logits (reference checks) stay float64."""
    return torch.promote_types(dtype, torch.float32)


def _tp_size(group) -> int:
    return 1 if group is None else dist.get_world_size(group)


def _all_reduce(tensor: torch.Tensor, op, group) -> torch.Tensor:
    if _tp_size(group) > 1:
        dist.all_reduce(tensor, op=op, group=group)
    return tensor


def _all_gather(tensor: torch.Tensor, group) -> torch.Tensor:
    """``[tp, *tensor.shape]`` (a leading dim of 1 without a group)."""
    if _tp_size(group) == 1:
        return tensor.unsqueeze(0)
    tp = _tp_size(group)
    out = tensor.new_empty(tp * tensor.shape[0], *tensor.shape[1:])  # gloo wants the flat layout
    dist.all_gather_into_tensor(out, tensor.contiguous(), group=group)
    return out.view(tp, *tensor.shape)


@dataclass(frozen=True)
class VocabShard:
    """Which global ids this rank's logits columns are: ``[start, start + size)``, of which ``valid`` are real."""

    start: int
    size: int
    valid: int

    @classmethod
    def of(cls, logits: torch.Tensor, vocab_size: int, tp_group) -> "VocabShard":
        rank = 0 if tp_group is None else dist.get_rank(tp_group)
        size = logits.shape[-1]
        if size * _tp_size(tp_group) < vocab_size:
            raise ValueError(
                f"logits shard of {size} columns x TP {_tp_size(tp_group)} cannot hold vocab_size {vocab_size}"
            )
        start = rank * size
        return cls(start, size, max(0, min(size, vocab_size - start)))

    def masked(self, chunk: torch.Tensor) -> torch.Tensor:
        """The chunk in (at least) fp32, a fresh buffer, padding columns set to the lowest finite value."""
        z = chunk.to(_compute_dtype(chunk.dtype), copy=True)
        if self.valid < self.size:
            z[:, self.valid :] = torch.finfo(z.dtype).min
        return z

    def local_ids(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index into this shard, clamped to be safe; mask of ids that live here)."""
        local = ids - self.start
        here = (local >= 0) & (local < self.valid)
        return local.clamp(0, max(self.size - 1, 0)), here


def _nan_outside_vocabulary(logps: torch.Tensor, ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``logps`` with NaN where ``ids`` (same shape) is not a vocabulary id. Checked on the device, without a
    read-back: like a non-finite logit, it reaches every rank through the loss and the gradient norm, and the
    trainer, which checks the ids once per step on the host, names them."""
    valid = (ids >= 0) & (ids < vocab_size)
    return torch.where(valid, logps, torch.full((), float("nan"), dtype=logps.dtype, device=logps.device))


def _forward_stats(logits, ids, with_entropy: bool, shard: VocabShard, tp_group, chunk: int):
    """(log π(ids) [k, n], entropy [n] or empty, log-partition [n]) of ``[n, V/TP]`` logits, chunk by chunk."""
    n, k = logits.shape[0], ids.shape[0]
    dtype = _compute_dtype(logits.dtype)
    logps = torch.empty(k, n, dtype=dtype, device=logits.device)
    entropy = torch.empty(n if with_entropy else 0, dtype=dtype, device=logits.device)
    lse = torch.empty(n, dtype=dtype, device=logits.device)
    for s in range(0, n, chunk):
        e_ = slice(s, min(s + chunk, n))
        z = shard.masked(logits[e_])
        m = _all_reduce(z.max(dim=-1).values, dist.ReduceOp.MAX, tp_group)
        z -= m[:, None]
        p = torch.exp(z)
        local, here = shard.local_ids(ids[:, e_])
        picked = torch.gather(z, 1, local.t()).t() * here  # [k, chunk], 0 where the id is elsewhere
        sums = [p.sum(dim=-1)]
        if with_entropy:  # Σ p z as a batched dot product: no third [chunk, V/TP] buffer
            sums.append(torch.bmm(p.unsqueeze(1), z.unsqueeze(2)).view(-1))
        packed = _all_reduce(torch.cat([torch.stack(sums), picked]), dist.ReduceOp.SUM, tp_group)
        log_norm = torch.log(packed[0])
        lse[e_] = m + log_norm
        logps[:, e_] = packed[len(sums) :] - log_norm
        if with_entropy:
            entropy[e_] = log_norm - packed[1] / packed[0]
    return logps, entropy, lse


class _FusedTokenStats(torch.autograd.Function):
    """Forward keeps two ``[chunk, V/TP]`` buffers alive (shifted logits and their exponentials), backward
    two as well; the per-token results (lse, entropy) are all that is saved besides the logits."""

    @staticmethod
    def forward(ctx, logits, ids, with_entropy, shard, tp_group, chunk, inplace_backward):
        logps, entropy, lse = _forward_stats(logits, ids, with_entropy, shard, tp_group, chunk)
        ctx.save_for_backward(logits, ids, lse, entropy)
        ctx.shard, ctx.chunk, ctx.with_entropy, ctx.inplace = shard, chunk, with_entropy, inplace_backward
        return logps, entropy

    @staticmethod
    def backward(ctx, grad_logps, grad_entropy):
        logits, ids, lse, entropy = ctx.saved_tensors
        shard, chunk = ctx.shard, ctx.chunk
        # In place, the gradient overwrites the logits (as Megatron's fused cross-entropy does): no
        # logits-sized allocation at all. Only valid when nothing else needs these logits afterwards.
        grad_logits = logits if ctx.inplace else torch.empty_like(logits)
        n = logits.shape[0]
        for s in range(0, n, chunk):
            e_ = slice(s, min(s + chunk, n))
            grad = shard.masked(logits[e_])
            grad -= lse[e_, None]  # log p
            p = torch.exp(grad)
            g = grad_logps[:, e_]
            coeff = g.sum(dim=0)
            # d log p_y / dz = onehot(y) - p ;  dH / dz = -p (log p + H); built in the log-p buffer
            if ctx.with_entropy:
                grad += entropy[e_, None]
                grad *= p
                grad *= -grad_entropy[e_, None]
            else:
                grad.zero_()
            grad.addcmul_(p, coeff[:, None], value=-1)
            del p
            local, here = shard.local_ids(ids[:, e_])
            grad.scatter_add_(1, local.t(), (g * here).t())
            if shard.valid < shard.size:
                grad[:, shard.valid :] = 0
            grad_logits[e_] = grad
        return grad_logits, None, None, None, None, None, None


def token_stats(
    logits: torch.Tensor,
    ids: Sequence[torch.Tensor],
    *,
    vocab_size: int,
    tp_group=None,
    with_entropy: bool = True,
    chunk_tokens: int = CHUNK_TOKENS,
    inplace_backward: bool = False,
) -> tuple[list[torch.Tensor], Optional[torch.Tensor]]:
    """log π(ids[k]) for each id tensor and the entropy, from this rank's vocabulary shard.

    Args:
        logits: ``[..., V/TP]`` this rank's shard (any float dtype; math in fp32).
        ids: id tensors shaped like ``logits.shape[:-1]``, global vocabulary ids in ``[0, vocab_size)`` (an id
            outside it, padding columns included, gets a NaN log-probability).
        vocab_size: the real vocabulary size; columns past it are padding.
        tp_group: the tensor-parallel group the vocabulary is sharded over (None: unsharded).
        chunk_tokens: tokens per chunk; extra memory is about two ``[chunk_tokens, V/TP]`` fp32 buffers.
        inplace_backward: write the gradient into the logits' storage instead of a new tensor (saves one
            logits-sized allocation; the logits must not be a view and must not be needed after backward).
    Returns:
        ``([log π(ids[k])] shaped like ids, entropy or None)`` in fp32 (float64 for float64 logits),
        differentiable w.r.t. ``logits``.
    """
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    stacked = (
        torch.stack([i.reshape(-1).long() for i in ids]) if ids else flat.new_zeros(0, flat.shape[0], dtype=torch.long)
    )
    shard = VocabShard.of(flat, vocab_size, tp_group)
    logps, entropy = _FusedTokenStats.apply(
        flat, stacked, with_entropy, shard, tp_group, chunk_tokens, inplace_backward
    )
    logps = _nan_outside_vocabulary(logps, stacked, vocab_size)
    return [lp.reshape(lead) for lp in logps], (entropy.reshape(lead) if with_entropy else None)


@dataclass
class TeacherStats:
    argmax_ids: torch.Tensor  # [...] int64
    token_logps: list[torch.Tensor]  # log π_T(ids[k]) for the ids asked for, fp32
    topk_ids: Optional[torch.Tensor] = None  # [..., K] int64, best first
    topk_probs: Optional[torch.Tensor] = None  # [..., K] fp32, softmax over the K logits
    sampled_ids: Optional[torch.Tensor] = None  # [...] int64, a sample at the given temperature


@torch.no_grad()
def teacher_stats(
    logits: torch.Tensor,
    *,
    vocab_size: int,
    tp_group=None,
    ids: Sequence[torch.Tensor] = (),
    topk: int = 0,
    sample_temperature: Optional[float] = None,
    seed: int = 0,
    chunk_tokens: int = CHUNK_TOKENS,
) -> TeacherStats:
    """Teacher-side statistics of ``[..., V/TP]`` logits; every TP rank gets the same, complete results.

    The sample uses inverse-CDF sampling on one uniform number per position drawn from ``seed`` (the same on
    all ranks), with the cumulative mass taken shard by shard in float64, so TP=1 and TP=N draw the same ids.
    """
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    n = flat.shape[0]
    shard = VocabShard.of(flat, vocab_size, tp_group)
    flat_ids = [i.reshape(-1).long() for i in ids]
    argmax = torch.empty(n, dtype=torch.long, device=flat.device)
    logps = [torch.empty(n, dtype=_compute_dtype(flat.dtype), device=flat.device) for _ in ids]
    topk_ids = torch.empty(n, topk, dtype=torch.long, device=flat.device) if topk else None
    topk_probs = torch.empty(n, topk, dtype=torch.float32, device=flat.device) if topk else None
    sampled = torch.empty(n, dtype=torch.long, device=flat.device) if sample_temperature is not None else None
    uniform = None
    if sample_temperature is not None:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        uniform = torch.rand(n, generator=generator, dtype=torch.float64).to(flat.device)
    for s in range(0, n, chunk_tokens):
        e_ = slice(s, min(s + chunk_tokens, n))
        z = shard.masked(flat[e_])
        # a non-finite logit must not turn into an id outside the vocabulary (its log-probs stay NaN/inf): NaN
        # and -inf sort below every real logit but above the padding, +inf above everything
        below_real = torch.finfo(z.dtype).min / 2
        torch.nan_to_num_(z, nan=below_real, neginf=below_real, posinf=torch.finfo(z.dtype).max)
        argmax[e_] = _global_argmax(z, shard, tp_group)
        if ids:
            stats, _, _ = _forward_stats(
                flat[e_], torch.stack([i[e_] for i in flat_ids]), False, shard, tp_group, chunk_tokens
            )
            for k, lp in enumerate(stats):
                logps[k][e_] = _nan_outside_vocabulary(lp, flat_ids[k][e_], vocab_size)
        if topk:
            topk_ids[e_], topk_probs[e_] = _global_topk(z, shard, tp_group, topk)
        if uniform is not None:
            sampled[e_] = _global_sample(z / sample_temperature, shard, tp_group, uniform[e_])
    return TeacherStats(
        argmax_ids=argmax.reshape(lead),
        token_logps=[lp.reshape(lead) for lp in logps],
        topk_ids=topk_ids.reshape(*lead, topk) if topk else None,
        topk_probs=topk_probs.reshape(*lead, topk) if topk else None,
        sampled_ids=sampled.reshape(lead) if sampled is not None else None,
    )


def _global_argmax(z: torch.Tensor, shard: VocabShard, group) -> torch.Tensor:
    value, index = z.max(dim=-1)
    # One gather of (value, global id) pairs; float64 holds ids exactly. Ties go to the smallest id.
    pairs = _all_gather(torch.stack([value.double(), (index + shard.start).double()]), group)  # [tp, 2, n]
    best = pairs[:, 0].max(dim=0).values
    candidates = torch.where(pairs[:, 0] == best, pairs[:, 1], torch.inf)
    return candidates.min(dim=0).values.long()


def _global_topk(z: torch.Tensor, shard: VocabShard, group, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    if k > shard.size:
        raise ValueError(f"topk={k} exceeds the {shard.size} vocabulary columns of a TP shard")
    values, index = z.topk(k, dim=-1)
    ids = torch.where(values > torch.finfo(z.dtype).min, index + shard.start, -1)  # padding is never top-K
    all_values = _all_gather(values, group).permute(1, 0, 2).reshape(z.shape[0], -1)
    all_ids = _all_gather(ids, group).permute(1, 0, 2).reshape(z.shape[0], -1)
    # Order by value (descending), ties by id (ascending), whatever the sharding: two stable sorts.
    by_id = torch.argsort(all_ids, dim=-1, stable=True)
    all_values, all_ids = torch.gather(all_values, 1, by_id), torch.gather(all_ids, 1, by_id)
    order = torch.argsort(all_values, dim=-1, descending=True, stable=True)[:, :k]
    top_values = torch.gather(all_values, 1, order)
    return torch.gather(all_ids, 1, order), torch.softmax(top_values, dim=-1)


def _global_sample(z: torch.Tensor, shard: VocabShard, group, uniform: torch.Tensor) -> torch.Tensor:
    m = _all_reduce(z.max(dim=-1).values, dist.ReduceOp.MAX, group)
    weights = torch.exp((z - m[:, None]).double())
    masses = _all_gather(weights.sum(dim=-1), group)  # [tp, n]
    cumulative = masses.cumsum(dim=0)
    target = uniform * cumulative[-1]
    # The owning rank is decided from the same gathered masses everywhere, so exactly one rank answers.
    owner = (cumulative <= target[None]).sum(dim=0).clamp(max=masses.shape[0] - 1)
    rank = 0 if group is None else dist.get_rank(group)
    offset = cumulative[rank] - masses[rank]
    local = torch.searchsorted(weights.cumsum(dim=-1), (target - offset)[:, None], right=True).squeeze(-1)
    local = local.clamp(max=max(shard.valid - 1, 0))
    ids = torch.where(owner == rank, local + shard.start, 0)
    return _all_reduce(ids, dist.ReduceOp.SUM, group)
