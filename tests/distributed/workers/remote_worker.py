"""The rollout engine on a rank of its own: a Megatron student on the training rank refits it over the bridge (in
buckets smaller than most tensors, so that a bucket holds one tensor or several), then asks
it for rollouts; the training rank also runs a colocated engine, in its own world, for reference. At the end the
rollout rank sends back its engine's parameters and the tensors its engine was given to load, to be compared with
the student's: CPU vLLM packs a linear layer's weight for its GEMM kernel and drops the tensor (an empty
parameter), so for those layers what the engine loaded is what can be compared.

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
from tgpo_megatron.models.bridge import export_hf_weights  # noqa: E402
from tgpo_megatron.rollout import SamplingSpec, VLLMEngine, refit_from_megatron  # noqa: E402
from tgpo_megatron.rollout.remote import ROLLOUT, Bridge, RemoteEngine, serve  # noqa: E402

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
        served = engine(args.hf, args.eos, placeholder=True)  # random weights until the refit
        loaded, update_weights = {}, served.update_weights

        def recorded(weights):
            return update_weights((name, loaded.setdefault(name, t.clone())) for name, t in weights)

        served.update_weights = recorded
        serve(served, bridge)
        model = served._runner().get_model()
        bridge.objects(({name: p.detach().cpu() for name, p in model.named_parameters()}, loaded), root=ROLLOUT)
        return
    pg = initialize_global_parallel(Layout(1, 1))
    model = build_from_hf(args.hf, Layout(1, 1), pg)
    remote = RemoteEngine(args.hf, side, bridge, bucket_bytes=4096)
    stats = refit_from_megatron(remote, model, pg)
    remote_out = remote.generate(PROMPTS, SAMPLED)
    local = engine(args.hf, args.eos, placeholder=False)
    local_out = local.generate(PROMPTS, SAMPLED)
    remote.close()
    engine_weights, loaded = bridge.objects(None, root=ROLLOUT)
    student = dict(export_hf_weights(model, pg))
    result = {
        "loaded": sorted(loaded) == sorted(student) and all(torch.equal(loaded[k], student[k]) for k in student),
        "unequal": unequal(engine_weights, student),
        "engine_tensors": sorted(name for name, value in engine_weights.items() if value.numel()),
        "bytes": stats.bytes,
        "tensors": stats.tensors,
        "remote": [[(c.token_ids, c.logprobs, c.finish_reason) for c in cs] for cs in remote_out],
        "local": [[(c.token_ids, c.logprobs, c.finish_reason) for c in cs] for cs in local_out],
    }
    with open(args.out, "w") as f:
        json.dump(result, f)


def unequal(engine_weights: dict, student: dict) -> list[str]:
    """The engine's parameters that differ from the student's by a bit (vLLM fuses q, k, v and gate, up; its
    embedding has rows for a padded vocabulary), and the student's tensors no engine parameter holds; packed
    (empty) parameters are left out."""
    fused = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
    covered, bad = set(), []
    for name, value in engine_weights.items():
        if value.numel() == 0:
            continue
        parts = [name]
        for fused_name, names in fused.items():
            if f".{fused_name}." in name:
                parts = [name.replace(fused_name, part) for part in names]
        covered.update(parts)
        want = torch.cat([student[part] for part in parts])
        if not torch.equal(value[: len(want)], want):
            bad.append(name)
    return bad


if __name__ == "__main__":
    main()
