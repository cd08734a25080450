"""A deterministic, resumable order over prompts.

Every rank computes the same global order from ``(seed, epoch)``; a step takes the next ``batch_size``
indices of that order (every rank holds the whole batch; who computes what is decided later, by tokens,
in ``tgpo_megatron.batching``). The position is two integers
(``epoch``, ``offset``), saved in checkpoints, so a resumed run continues exactly where it stopped. A batch
never straddles two epochs: the tail of an epoch that does not fill a batch is dropped, as in verl.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tgpo_megatron.errors import UserError
from tgpo_megatron.seeds import derive_seed


@dataclass
class PromptSampler:
    num_examples: int
    batch_size: int
    seed: int = 1
    shuffle: bool = True
    epoch: int = 0
    offset: int = 0

    def __post_init__(self):
        if self.batch_size < 1:
            raise UserError(f"batch_size={self.batch_size} must be >= 1")
        if self.num_examples < self.batch_size:
            raise UserError(
                f"the dataset has {self.num_examples} usable prompts, fewer than one batch of {self.batch_size}"
            )

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_examples))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "prompt-order", epoch))
        return torch.randperm(self.num_examples, generator=generator).tolist()

    def next_batch(self) -> list[int]:
        """The next global batch of example indices (identical on every rank)."""
        if self.offset + self.batch_size > self.num_examples:
            self.epoch, self.offset = self.epoch + 1, 0
        batch = self._order(self.epoch)[self.offset : self.offset + self.batch_size]
        self.offset += self.batch_size
        return batch

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "offset": self.offset,
            "seed": self.seed,
            "num_examples": self.num_examples,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "num_examples", "batch_size"):
            if state[key] != getattr(self, key):
                raise UserError(
                    f"cannot resume the prompt order: the checkpoint has {key}={state[key]}, "
                    f"this run {getattr(self, key)} (a changed dataset or batch size)"
                )
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
