"""Rollouts as tensors: prompt ⊕ response sequences packed into micro-batches by a token budget.

A sequence ``x = prompt ⊕ response`` of length L is fed as ``x[:-1]`` and predicts ``labels = x[1:]``; the
response tokens are the labels at positions ``P-1 .. L-2`` (P = prompt length), where ``loss_mask`` is 1.
Per-token values (old log-probs, the teacher's ids, ...) are stored per response token and scattered into
those label positions, so every tensor of a micro-batch is ``[b, s]`` and lines up with the logits.

Micro-batches are formed by a token budget (dynamic batching): sequences sorted by length are grouped so
that ``rows × padded length`` stays within the budget. All micro-batches of one call share one padded shape
when ``uniform`` is set, as Megatron's pipeline schedule needs for its p2p buffers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

PAD_ID = 0


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
    """``[len(response)]`` (or ``[len(response), K]``) tensors: old_logp, teacher_ids, teacher_logp, ...;
    ``loss_weight`` (if present) replaces the 1s of the loss mask."""
    input_response: Optional[list[int]] = None
    """What the model reads in place of ``response`` (supervised input augmentation); labels stay ``response``."""

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.response) - 1


def pack(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Group indices (longest first) so that each group's ``rows × max length`` stays within the budget; a
    sequence longer than the budget gets a micro-batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= token_budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def collate(rollouts: Sequence[Rollout], keys: Sequence[str] = (), width: Optional[int] = None,
            rows: Optional[int] = None) -> dict[str, torch.Tensor]:
    """Tensors for a micro-batch: ``tokens`` (the model input), ``position_ids``, ``labels``, ``loss_mask``
    and each per-token key, padded to ``rows × width`` (padding rows and columns are masked out)."""
    width = width or max(r.length for r in rollouts)
    rows = rows or len(rollouts)
    tokens = torch.full((rows, width), PAD_ID, dtype=torch.long)
    labels = torch.full((rows, width), PAD_ID, dtype=torch.long)
    mask = torch.zeros(rows, width)
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        sample = rollouts[0].per_token[key]
        out[key] = torch.zeros((rows, width, *sample.shape[1:]), dtype=sample.dtype)
    advantages = torch.zeros(rows)
    for row, r in enumerate(rollouts):
        x = torch.tensor(r.prompt + r.response, dtype=torch.long)
        n, start = r.length, len(r.prompt) - 1
        read = x if r.input_response is None else torch.tensor(r.prompt + r.input_response, dtype=torch.long)
        tokens[row, :n] = read[:-1]
        labels[row, :n] = x[1:]
        mask[row, start:n] = r.per_token.get("loss_weight", 1.0)
        advantages[row] = r.advantage
        for key in keys:
            out[key][row, start:n] = r.per_token[key]
    positions = torch.arange(width).unsqueeze(0).expand(rows, -1).contiguous()
    out.update(tokens=tokens, position_ids=positions, labels=labels, loss_mask=mask, advantages=advantages)
    return out


def microbatches(rollouts: Sequence[Rollout], token_budget: int, keys: Sequence[str] = (),
                 uniform: bool = False) -> tuple[list[dict[str, torch.Tensor]], list[list[int]]]:
    """Micro-batches of ``rollouts`` and, for each, the indices of the rollouts it holds (in row order)."""
    groups = pack([r.length for r in rollouts], token_budget)
    width = max(r.length for r in rollouts) if uniform else None
    rows = max(len(g) for g in groups) if uniform else None
    return [collate([rollouts[i] for i in g], keys, width, rows) for g in groups], groups


def scatter_back(values: torch.Tensor, rollouts: Sequence[Rollout], rows: Sequence[int]) -> list[torch.Tensor]:
    """Per-response-token slices of a ``[b, s, ...]`` micro-batch tensor for the rollouts in ``rows``."""
    out = []
    for row, i in enumerate(rows):
        r = rollouts[i]
        out.append(values[row, len(r.prompt) - 1:r.length].clone())
    return out
