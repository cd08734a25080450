"""A separate placement's two worlds: 3 processes, 2 training ranks and 1 rollout rank, each side with a world
of its own (its collectives see only its ranks) and a bridge between the first training rank and the rollout
rank that carries tensors both ways."""

import json

import pytest

from tests.distributed.conftest import torchrun
from tgpo_megatron.distributed.worlds import split_world
from tgpo_megatron.errors import UserError


def test_three_ranks_split_into_two_worlds_and_a_bridge(tmp_path):
    torchrun("worlds_worker.py", "--rollout-ranks", 1, "--out", tmp_path, nproc=3, timeout=120)
    ranks = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(3)]
    assert [(r["role"], r["rank"], r["bridge_rank"]) for r in ranks] == [
        ("train", 0, 0),
        ("train", 1, None),
        ("rollout", 0, 1),
    ]
    assert [(r["world_rank"], r["world_size"], r["sum"]) for r in ranks] == [(0, 2, 3.0), (1, 2, 3.0), (0, 1, 1.0)]
    assert ranks[2]["weights"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # out to the rollout side
    assert ranks[0]["rollouts"] == [7.0] * 3  # and back
    assert ranks[1]["weights"] == [0.0] * 6 and ranks[1]["rollouts"] == [0.0] * 3  # not on the bridge


def test_each_rank_learns_its_side_and_its_sides_world():
    job = {"MASTER_ADDR": "node1", "MASTER_PORT": "29500", "WORLD_SIZE": "8"}
    environ = {**job, "RANK": "5"}
    side = split_world(2, environ)
    assert (side.role, side.rank, side.size, side.bridge_rank) == ("train", 5, 6, None)
    assert environ == {**job, "RANK": "5", "WORLD_SIZE": "6", "TGPO_JOB_RANK": "5"}
    environ = {**job, "RANK": "7"}
    side = split_world(2, environ)
    assert (side.role, side.rank, side.size, side.bridge_rank) == ("rollout", 1, 2, 2)
    assert environ == {
        "MASTER_ADDR": "node1",
        "MASTER_PORT": "29501",  # job rank 0's store: the rollout side's rendezvous, joined as a client
        "TORCHELASTIC_USE_AGENT_STORE": "True",
        "RANK": "1",
        "WORLD_SIZE": "2",
        "TGPO_JOB_RANK": "7",
    }


@pytest.mark.parametrize("ranks", [0, 8])
def test_a_side_with_no_rank_is_refused(ranks):
    with pytest.raises(UserError, match=f"rollout.ranks={ranks}: a separate placement needs at least one"):
        split_world(ranks, {"MASTER_ADDR": "a", "MASTER_PORT": "1", "WORLD_SIZE": "8", "RANK": "0"})
