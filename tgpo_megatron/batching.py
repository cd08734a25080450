"""Rollouts as micro-batches: which rank and which micro-batch each sequence goes to, and its tensors.

A sequence ``x = prompt ⊕ response`` of length L+1 is fed as ``x[:-1]`` and predicts ``labels = x[1:]``; the
response tokens are the labels at positions ``P-1 .. L-1`` (P = prompt length), where ``loss_mask`` is 1 (or
the rollout's ``loss_weight``). Per-token values (old log-probs, the teacher's ids, ...) are stored per response
token and laid out at those label positions, so every tensor of a micro-batch lines up with the logits.

**Packed** (the default): the sequences of a micro-batch are concatenated along the sequence dimension into
one row ``[1, T]`` with ``T <= token_budget`` (a longer sequence gets a micro-batch of its own), and
``cu_seqlens`` marks where each starts: attention stays within a sequence and RoPE positions restart at 0
(Megatron's THD format). The compute of a step is then proportional to its real tokens.
**Padded** (``trainer.sequence_packing: false``, the reference path): one sequence per row, every
micro-batch of a call padded to one ``rows x width`` shape.

The plan (who computes what) depends only on the sequence lengths, which every rank knows, so every rank
derives the same plan without communicating: rollouts are spread over data-parallel ranks by tokens (sorted
greedy), packed first-fit decreasing within the budget, and every rank gets the same number of micro-batches.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import torch

PAD_ID = 0


PER_TOKEN: dict[str, str] = {
    "old_logp": "[L] float. log π_old(y_t): the student before the step's updates (trainer.old_logprobs)",
    "old_logp_teacher_ids": "[L] float. log π_old(ŷ_t) of the teacher's argmax (trainer.old_logprobs; tgpo_adv)",
    "teacher_ids": "[L] long. ŷ_t, the teacher's argmax after the response prefix (Teacher.label)",
    "teacher_logp": "[L] float. log π_T(y_t) of the sampled token (Teacher.label)",
    "teacher_sampled_ids": "[L] long. A token sampled from π_T at teacher_sample_temperature (Teacher.label)",
    "teacher_topk_ids": "[L, K] long. The teacher's K most likely tokens (Teacher.label)",
    "teacher_topk_probs": "[L, K] float. Their probabilities, renormalised over the K (Teacher.label)",
    "off_policy": "[L] float. 1 on the tokens of a dataset trace standing in for a rollout (trainer.generate; luffy)",
    "loss_weight": "[L] float. Replaces the 1s of the loss mask (trainer.aggregate: the loss aggregation's weight)",
    "entropy_weight": "[L] float. The entropy bonus's weights where not the loss mask's (trainer.aggregate)",
    "correction_weight": "[L] float. The engine-mismatch correction's weight (trainer.correction; rollout.correction)",
}
"""The one contract for ``Rollout.per_token`` (L = the response's tokens); ``collate`` refuses other keys."""


@dataclass
class Rollout:
    """One sampled response to one prompt, with everything the loss needs per response token."""

    prompt: list[int]
    response: list[int]
    answer: str = ""
    finish_reason: str = "stop"
    reward: float = 0.0
    advantage: float = 0.0
    engine_logprobs: list[float] = field(default_factory=list)
    per_token: dict[str, torch.Tensor] = field(default_factory=dict)
    """Values at the response tokens, named as :data:`PER_TOKEN` says (who writes each, its shape, its
    meaning)."""
    input_response: Optional[list[int]] = None
    """What the model reads in place of ``response`` (supervised input augmentation); labels stay ``response``."""

    @property
    def length(self) -> int:
        """Positions the model computes for this rollout (the whole sequence but its last token)."""
        return len(self.prompt) + len(self.response) - 1

    @property
    def loss_tokens(self) -> float:
        """This rollout's share of the token-mean denominator: its response tokens (weighted)."""
        weight = self.per_token.get("loss_weight")
        return float(len(self.response)) if weight is None else float(weight.sum())


def attach(rollouts: Sequence[Rollout], values: Sequence[dict[str, torch.Tensor]]) -> None:
    """Store each rollout's per-token ``values`` (a phase's result, named as :data:`PER_TOKEN` says)."""
    if len(values) != len(rollouts):
        raise ValueError(f"{len(values)} sets of per-token values for {len(rollouts)} rollouts")
    for r, value in zip(rollouts, values):
        r.per_token.update(value)


@dataclass
class MiniBatch:
    """The rollouts of one optimizer step (every rank holds them all) and this rank's micro-batches of them,
    planned once (``Student.plan``): the old-log-prob pass and the update compute the same ones."""

    rollouts: list[Rollout]
    micro_batches: list[list[int]]
    """Indices into ``rollouts``, per micro-batch of this data-parallel rank."""

    @property
    def local(self) -> list[Rollout]:
        """This rank's rollouts, micro-batch by micro-batch."""
        return [self.rollouts[i] for group in self.micro_batches for i in group]


# -- the plan: lengths in, indices out ---------------------------------------------------------------------


def contiguous_share(count: int, parts: int, part: int) -> range:
    """Part ``part`` of ``range(count)`` cut into ``parts`` consecutive pieces whose sizes differ by at most one
    (the first ``count % parts`` one larger): work whose cost does not depend on length, or whose results are
    gathered back in order (prompts to vLLM replicas, answers to reward workers)."""
    size, extra = divmod(count, parts)
    start = part * size + min(part, extra)
    return range(start, start + size + (part < extra))


def split_by_tokens(lengths: Sequence[int], parts: int) -> list[list[int]]:
    """Indices split into ``parts`` lists of about equal total length: longest first, each to the part with the
    fewest tokens so far (ties to the lowest part). Within a part, indices keep their original order."""
    heap = [(0, p) for p in range(parts)]
    out: list[list[int]] = [[] for _ in range(parts)]
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        total, p = heapq.heappop(heap)
        out[p].append(i)
        heapq.heappush(heap, (total + lengths[i], p))
    return [sorted(part) for part in out]


def pack_by_tokens(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """First-fit decreasing: groups of indices whose lengths sum to at most ``token_budget``; a sequence longer
    than the budget gets a group of its own. Groups come longest-first."""
    groups: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for g, free in enumerate(room):
            if lengths[i] <= free:
                groups[g].append(i)
                room[g] -= lengths[i]
                break
        else:
            groups.append([i])
            room.append(token_budget - lengths[i])
    return groups


def pack_padded(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Groups (longest first) whose ``rows x longest`` stays within the budget, for padded micro-batches."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= token_budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def pack(lengths: Sequence[int], token_budget: int, packed: bool = True) -> list[list[int]]:
    """Micro-batches of one rank (lists of indices): by tokens when packed, by ``rows x longest`` when padded."""
    return (pack_by_tokens if packed else pack_padded)(lengths, token_budget)


def _split_largest(groups: list[list[int]], lengths: Sequence[int]) -> bool:
    """Split the group with the most tokens among those of two or more sequences in two (each half stays within
    the budget the group was within). False when every group is a single sequence."""
    candidates = [g for g, group in enumerate(groups) if len(group) > 1]
    if not candidates:
        return False
    g = max(candidates, key=lambda g: sum(lengths[i] for i in groups[g]))
    halves = split_by_tokens([lengths[i] for i in groups[g]], 2)
    groups[g : g + 1] = [[groups[g][j] for j in half] for half in halves]
    return True


def plan_micro_batches(
    lengths: Sequence[int], ranks: int, token_budget: int, packed: bool = True
) -> list[list[list[int]]]:
    """For each of ``ranks`` data-parallel ranks, its micro-batches as lists of indices into ``lengths``.

    Every rank gets the same number of micro-batches (Megatron's schedule and DDP's gradient reduction count
    them): a rank with fewer splits its fullest micro-batch, and one with only single-sequence micro-batches
    left gets empty ones. Packed, no micro-batch holds more than ``token_budget`` tokens unless it is a single
    longer sequence; padded, ``rows x longest`` stays within it (up to the call's common padded shape).
    """
    plan = []
    for share in split_by_tokens(lengths, ranks):
        groups = pack([lengths[i] for i in share], token_budget, packed)
        plan.append([[share[j] for j in group] for group in groups])
    count = max(len(groups) for groups in plan)
    for groups in plan:
        while len(groups) < count and _split_largest(groups, lengths):
            pass
        groups.extend([] for _ in range(count - len(groups)))
    return plan


# -- tensors ---------------------------------------------------------------------------------------------


@dataclass
class MicroBatch:
    """The tensors of one forward: all ``[rows, width]`` (per-token values may add trailing dims)."""

    tokens: torch.Tensor
    """The model input."""
    position_ids: torch.Tensor
    labels: torch.Tensor
    """y_t, the token each position predicts."""
    loss_mask: torch.Tensor
    values: dict[str, torch.Tensor]
    """Per-token values (:data:`PER_TOKEN`) laid out at the label positions."""
    advantages: torch.Tensor
    """Each rollout's advantage at its response tokens, 0 elsewhere."""
    spans: list[tuple[int, int, int]]
    """Per rollout, in the order given to ``collate``: ``(row, start, end)`` of its response labels."""
    cu_seqlens: Optional[torch.Tensor] = None
    """Packed: int32 ``[n + 1]`` offsets of the sequences in the row (a padding tail counts as one)."""
    max_seqlen: int = 0
    bounds: tuple[int, ...] = ()
    """Packed: the same offsets as host integers (where the device tensor would cost a read-back)."""

    @property
    def packed(self) -> bool:
        return self.cu_seqlens is not None

    def to(self, device: torch.device) -> "MicroBatch":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return replace(
            self,
            tokens=move(self.tokens),
            position_ids=move(self.position_ids),
            labels=move(self.labels),
            loss_mask=move(self.loss_mask),
            values={k: move(v) for k, v in self.values.items()},
            advantages=move(self.advantages),
            cu_seqlens=None if self.cu_seqlens is None else move(self.cu_seqlens),
        )

    def per_rollout(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """The response-token slices of a ``[rows, width, ...]`` tensor, one per rollout (copies)."""
        return [tensor[row, start:end].clone() for row, start, end in self.spans]


def _sequence(r: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(r.prompt + r.response, dtype=torch.long)
    read = x if r.input_response is None else torch.tensor(r.prompt + r.input_response, dtype=torch.long)
    return read[:-1], x[1:]


def _empty_values(sample: Optional[Rollout], keys: Sequence[str], shape: tuple[int, int]) -> dict:
    unknown = [key for key in keys if key not in PER_TOKEN]
    if unknown:
        raise KeyError(f"per-token keys {unknown} are not in batching.PER_TOKEN ({', '.join(PER_TOKEN)})")
    values = {}
    for key in keys:
        like = sample.per_token[key]
        values[key] = torch.zeros((*shape, *like.shape[1:]), dtype=like.dtype)
    return values


def collate(
    rollouts: Sequence[Rollout],
    keys: Sequence[str] = (),
    *,
    packed: bool = True,
    width: Optional[int] = None,
    rows: Optional[int] = None,
    pad_multiple: int = 1,
    sample: Optional[Rollout] = None,
) -> MicroBatch:
    """The micro-batch of ``rollouts`` (empty: masked padding only; ``sample`` then gives the keys' shapes).

    Packed: one row of the concatenated sequences, padded at the end to a multiple of ``pad_multiple``.
    Padded: one row per rollout, ``rows x width`` (default: as many as needed), padding masked out.
    """
    lengths = [r.length for r in rollouts]
    if packed:
        used = sum(lengths)
        total = max(1, -(-used // pad_multiple) * pad_multiple)
        shape = (1, total)
        starts = [(0, sum(lengths[:j])) for j in range(len(rollouts))]
        bounds = [0, *(o + n for (_, o), n in zip(starts, lengths))]
        if total > used:
            bounds.append(total)  # the padding tail: a sequence of its own, attending only to itself
    else:
        shape = (rows or max(1, len(rollouts)), width or max(lengths, default=1))
        starts = [(j, 0) for j in range(len(rollouts))]
    tokens = torch.full(shape, PAD_ID, dtype=torch.long)
    labels = torch.full(shape, PAD_ID, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    mask = torch.zeros(shape)
    values = _empty_values(rollouts[0] if rollouts else sample, keys, shape)
    advantages = torch.zeros(shape)
    spans = []
    for r, (row, offset), n in zip(rollouts, starts, lengths):
        read, target = _sequence(r)
        end, response_start = offset + n, offset + len(r.prompt) - 1
        tokens[row, offset:end], labels[row, offset:end] = read, target
        positions[row, offset:end] = torch.arange(n)
        mask[row, response_start:end] = r.per_token.get("loss_weight", 1.0)
        advantages[row, response_start:end] = r.advantage
        for key in keys:
            values[key][row, response_start:end] = r.per_token[key]
        spans.append((row, response_start, end))
    if not packed:
        return MicroBatch(tokens, positions, labels, mask, values, advantages, spans)
    if total > used:
        positions[0, used:] = torch.arange(total - used)
    cu_seqlens = torch.tensor(bounds, dtype=torch.int32)
    return MicroBatch(
        tokens,
        positions,
        labels,
        mask,
        values,
        advantages,
        spans,
        cu_seqlens,
        max_seqlen=int((cu_seqlens[1:] - cu_seqlens[:-1]).max()),
        bounds=tuple(bounds),
    )


def micro_batches(
    rollouts: Sequence[Rollout],
    groups: Sequence[Sequence[int]],
    keys: Sequence[str] = (),
    *,
    packed: bool = True,
    pad_multiple: int = 1,
) -> list[MicroBatch]:
    """The micro-batches of ``groups`` (lists of indices into ``rollouts``); padded ones share one shape. Every
    sequence dimension is a multiple of ``pad_multiple`` (the TP size with sequence parallelism)."""
    chosen = [[rollouts[i] for i in group] for group in groups]
    sample = rollouts[0] if rollouts else None
    if packed:
        return [collate(rs, keys, pad_multiple=pad_multiple, sample=sample) for rs in chosen]
    width = -(-max((r.length for rs in chosen for r in rs), default=1) // pad_multiple) * pad_multiple
    rows = max(max(len(rs) for rs in chosen), 1)
    return [collate(rs, keys, packed=False, width=width, rows=rows, sample=sample) for rs in chosen]
