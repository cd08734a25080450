"""Two worlds in one job, for ``rollout.placement: separate``: the training ranks and the rollout ranks.

torchrun and srun start every rank of a job in one world, but Megatron's global parallel state and vLLM's
external launcher each take the whole ``torch.distributed`` world as theirs: vLLM lays every rank of the world
out in its DP x PP x TP grid and creates its groups collectively over all of them, so rollout ranks in the
training world would hang the training ranks, and training ranks would fall into vLLM's groups. So before
``torch.distributed`` starts, each rank rewrites its world variables to those of its side: the first
``world - rollout_ranks`` ranks train, the others roll out, each side with its own rendezvous. The training side
keeps the launcher's; the rollout side's is a store that the job's rank 0 serves on ``MASTER_PORT + 1`` (rank 0
runs on ``MASTER_ADDR``'s host under torchrun and srun alike, while the first rollout rank may be on another
node), which every rollout rank joins as a client. A bridge process group, made outside both default groups from
the same store (under a prefix of its own), joins the first training rank (bridge rank 0) with every rollout rank
(bridge ranks 1..R): weights go out over it, rollouts come back.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import MutableMapping, Optional

import torch
import torch.distributed as dist

from tgpo_megatron.errors import UserError

JOB_RANK = "TGPO_JOB_RANK"
"""The rank in the whole job, kept in the environment once ``RANK`` names the rank within a side."""
STORE_PORT_OFFSET = 1
"""The store of the rollout side's rendezvous and of the bridge listens on ``MASTER_PORT`` plus this."""
_served: list = []
"""The store job rank 0 serves, kept for the life of the process."""


@dataclass(frozen=True)
class Side:
    """This rank's side of the job and its place in it."""

    role: str
    """``train`` or ``rollout``."""
    rank: int
    """The rank within its side's world."""
    size: int
    """Its side's world size."""
    training_ranks: int
    rollout_ranks: int
    master_addr: str
    master_port: int
    """The job's ``MASTER_PORT`` (the training side's rendezvous)."""

    @property
    def bridge_rank(self) -> Optional[int]:
        """This rank's rank in the bridge group: 0 for the first training rank, 1.. for the rollout ranks, None
        for the other training ranks."""
        if self.role == "rollout":
            return 1 + self.rank
        return 0 if self.rank == 0 else None


def split_world(rollout_ranks: int, environ: MutableMapping[str, str] = os.environ) -> Side:
    """This rank's side, and ``environ``'s ``RANK``, ``WORLD_SIZE`` and ``MASTER_PORT`` rewritten to its side's
    world (call before ``torch.distributed`` or vLLM start)."""
    missing = [key for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if key not in environ]
    if missing:
        raise UserError(f"rollout.placement=separate needs a launcher's {', '.join(missing)} (torchrun or srun)")
    rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
    if not 0 < rollout_ranks < world:
        raise UserError(
            f"rollout.ranks={rollout_ranks}: a separate placement needs at least one training and one rollout "
            f"rank among the job's {world}"
        )
    training = world - rollout_ranks
    port = int(environ["MASTER_PORT"])
    role = "train" if rank < training else "rollout"
    side = Side(
        role=role,
        rank=rank if role == "train" else rank - training,
        size=training if role == "train" else rollout_ranks,
        training_ranks=training,
        rollout_ranks=rollout_ranks,
        master_addr=environ["MASTER_ADDR"],
        master_port=port,
    )
    environ["RANK"], environ["WORLD_SIZE"] = str(side.rank), str(side.size)
    environ[JOB_RANK] = str(rank)
    if rank == 0 and not _served:
        _served.append(
            dist.TCPStore(side.master_addr, port + STORE_PORT_OFFSET, is_master=True, wait_for_workers=False)
        )
    if role == "rollout":
        environ["MASTER_PORT"] = str(port + STORE_PORT_OFFSET)
        environ["TORCHELASTIC_USE_AGENT_STORE"] = "True"  # torch's word for "every rank is a client of the store"
    return side


def bridge_group(side: Side, backend: str, timeout: datetime.timedelta = datetime.timedelta(minutes=30)):
    """The bridge process group on its members (``None`` elsewhere): ``gloo`` or ``nccl``, made from job rank
    0's store under a prefix of its own, so that neither side's default group knows of it."""
    if side.bridge_rank is None:
        return None
    size = 1 + side.rollout_ranks
    store = dist.TCPStore(side.master_addr, side.master_port + STORE_PORT_OFFSET, is_master=False, timeout=timeout)
    store = dist.PrefixStore("tgpo-bridge", store)
    if backend == "gloo":
        return dist.ProcessGroupGloo(store, side.bridge_rank, size, timeout)
    if backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return dist.ProcessGroupNCCL(store, side.bridge_rank, size, options)
    raise ValueError(f"the bridge needs gloo or nccl, not {backend!r}")


def bridge_broadcast(group, tensor: torch.Tensor, root: int) -> torch.Tensor:
    """Broadcast ``tensor`` (in place) from bridge rank ``root`` to every member of the bridge."""
    options = dist.BroadcastOptions()
    options.rootRank = root
    group.broadcast([tensor], options).wait()
    return tensor
