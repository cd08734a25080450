"""Group-normalised advantages (docs/method.md §2.3, §6)."""

from __future__ import annotations

import torch

GROUP_STD_EPS = 1e-6


def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = GROUP_STD_EPS) -> torch.Tensor:
    """Group-normalised outcome advantages, one per rollout (docs/method.md §2.3).

    ``A_i = (R_i - mean_G R) / (std_G R + eps)`` over the ``group_size`` consecutive rollouts of a prompt,
    with the unbiased (Bessel-corrected) std as in verl's GRPO; 0 for a group whose rewards are all equal
    (the std is 0 there, and so is every ``R_i - mean``), and for a group of one rollout.

    Args:
        rewards: ``[num_prompts * group_size]`` rollout rewards, groups contiguous.
    Returns:
        ``[num_prompts * group_size]`` float32 advantages.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.reshape(-1, group_size).double()
    if group_size == 1:
        return torch.zeros_like(rewards, dtype=torch.float32)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    advantages = torch.where(std > 0, (grouped - mean) / (std + eps), torch.zeros_like(grouped))
    return advantages.reshape(-1).float()
