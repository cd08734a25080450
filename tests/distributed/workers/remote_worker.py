"""The rollout engine on a rank of its own: a Megatron student on the training rank refits it over the bridge,
then asks it for rollouts; the training rank also runs a colocated engine, in its own world, for reference.

    torchrun --nproc-per-node 2 remote_worker.py --hf DIR --eos ID --out RESULT.json
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
from tgpo_megatron.config.layouts import Layout  # noqa: E402
from tgpo_megatron.distributed.parallel import initialize_global_parallel  # noqa: E402
from tgpo_megatron.distributed.platform import init_distributed  # noqa: E402
from tgpo_megatron.distributed.worlds import bridge_group, split_world  # noqa: E402
from tgpo_megatron.models import build_from_hf  # noqa: E402
from tgpo_megatron.rollout import SamplingSpec, VLLMEngine, refit_from_megatron  # noqa: E402
from tgpo_megatron.rollout.remote import Bridge, RemoteEngine, serve  # noqa: E402

PROMPTS = [[5, 17, 23, 42, 8], [9, 9, 30], [100, 3, 77, 12, 64, 2, 18], [44]]
SAMPLED = SamplingSpec(n=3, temperature=1.0, max_tokens=12, seed=11)


def engine(hf: str, eos: int, placeholder: bool) -> VLLMEngine:
    return VLLMEngine(
        hf,
        eos_token_ids=[eos],
        dtype="float32",
        max_model_len=128,
        kv_cache_bytes=64 << 20,
        enforce_eager=True,
        placeholder_weights=placeholder,
    )


@torch.no_grad()
def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hf", required=True)
    p.add_argument("--eos", type=int, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    side = split_world(1)
    platform = init_distributed()
    bridge = Bridge(bridge_group(side, "gloo"), side.bridge_rank, platform.device)
    if side.role == "rollout":
        serve(engine(args.hf, args.eos, placeholder=True), bridge)  # random weights until the refit
        return
    pg = initialize_global_parallel(Layout(1, 1))
    model = build_from_hf(args.hf, Layout(1, 1), pg)
    remote = RemoteEngine(args.hf, side, bridge)
    stats = refit_from_megatron(remote, model, pg)
    remote_out = remote.generate(PROMPTS, SAMPLED)
    local = engine(args.hf, args.eos, placeholder=False)
    local_out = local.generate(PROMPTS, SAMPLED)
    remote.close()
    result = {
        "bytes": stats.bytes,
        "tensors": stats.tensors,
        "remote": [[(c.token_ids, c.logprobs, c.finish_reason) for c in cs] for cs in remote_out],
        "local": [[(c.token_ids, c.logprobs, c.finish_reason) for c in cs] for cs in local_out],
    }
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
