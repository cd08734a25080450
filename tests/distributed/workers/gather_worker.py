"""gather_rollout_values on 3 gloo processes: every rank must end with exactly the tensors (dtype, shape, bits)
that the holding rank built, for every kind of value the trainer sends; prints one line per passed case."""

import torch
import torch.distributed as dist

from tgpo_megatron.models.pipeline import gather_rollout_values

ROLLOUTS = 11


def value_of(i: int) -> dict:
    """Rollout i's value, rebuilt identically on every rank (the reference); rollout 4 has no tokens."""
    g = torch.Generator().manual_seed(i)
    tokens = 0 if i == 4 else 1 + 7 * i
    return {
        "teacher_ids": torch.randint(0, 152_064, (tokens,), generator=g, dtype=torch.int32),
        "teacher_logp": -torch.rand(tokens, generator=g),
        "teacher_topk_probs": torch.rand(tokens, 16, generator=g).to(torch.bfloat16),
        "mask": torch.rand(tokens, generator=g) > 0.5,
        "logps": torch.randn(tokens, 3, generator=g, dtype=torch.float64).t(),  # not contiguous
    }


def same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y) for x, y in zip(a.values(), b.values())
    )


def check(case: str, holder, senders, group=None) -> None:
    rank = dist.get_rank()
    values = [value_of(i) if holder(i) == rank else None for i in range(ROLLOUTS)]
    out = gather_rollout_values(values, rank in senders, torch.device("cpu"), group)
    for i in range(ROLLOUTS):
        expected = holder(i) in senders and (group is None or holder(i) in members)
        assert (out[i] is not None) == expected, (case, i)
        assert out[i] is None or same(out[i], value_of(i)), (case, i)
    print(f"rank {rank}: {case} ok", flush=True)


if __name__ == "__main__":
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    members = [0, 1]
    pair = dist.new_group(members)
    check("round robin, all send", lambda i: i % world, range(world))
    check("contiguous, rank 1 holds but does not send", lambda i: i * world // ROLLOUTS, [0, 2])
    check("rank 0 holds everything", lambda i: 0, range(world))
    check("nobody sends", lambda i: i % world, [])
    if dist.get_rank() in members:
        check("a subgroup", lambda i: i % 2, members, group=pair)
    dist.destroy_process_group()
