"""Model-family checks in one 2-process job: logits parity at several layouts, the HF round trip, and
checkpoints resharded between TP=2 and PP=2 (and, for mixtures of experts, from EP=2 to EP=1 and TP=2).

    torchrun --nproc-per-node 2 models_worker.py --models a=DIR_A,b=DIR_B --workdir W --out RESULT.json

The parallel state is re-initialised for each layout inside the job, so one launch covers them all.
"""

import argparse
import json
import os

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from tgpo_megatron.config.arch import load_arch
from tgpo_megatron.config.layouts import Layout
from tgpo_megatron.distributed.parallel import initialize_global_parallel, model_process_groups
from tgpo_megatron.distributed.platform import init_distributed
from tgpo_megatron.models import build_from_hf, build_gpt_model, export_hf_weights, load_model, save_model
from tgpo_megatron.models.hf_export import write_hf_checkpoint
from tgpo_megatron.models.parity import fixed_batch, hf_logits, megatron_logits


def logits_at(hf_dir, layout, tokens, ckpt=None, own_groups=False):
    pg = model_process_groups(layout) if own_groups else initialize_global_parallel(layout)
    if ckpt is None:
        model = build_from_hf(hf_dir, layout, pg)
    else:
        model = build_gpt_model(load_arch(hf_dir), layout, pg)
        load_model(model, ckpt)
    return model, pg, megatron_logits(model.eval(), pg, tokens)


def max_diff(a, b):
    return (a - b).abs().max().item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    init_distributed()
    rank0 = dist.get_rank() == 0
    models = dict(item.split("=", 1) for item in args.models.split(","))
    result = {
        key: {}
        for key in (
            "parity",
            "roundtrip_tensors_equal",
            "roundtrip_logits_diff",
            "ckpt_tp2_to_pp2",
            "ckpt_pp2_to_tp2",
            "own_groups",
            "ckpt_ep2_to_ep1",
            "ckpt_ep2_to_tp2",
            "own_groups_ep2",
        )
    }

    def round_trip(name, hf_dir, model, pg, tokens, reference):
        export_dir = os.path.join(args.workdir, f"export_{name}")
        write_hf_checkpoint(export_hf_weights(model, pg), export_dir, model.arch, write=rank0)
        if rank0:
            source = load_file(os.path.join(hf_dir, "model.safetensors"))
            exported = load_file(os.path.join(export_dir, "model.safetensors"))
            result["roundtrip_tensors_equal"][name] = sorted(source) == sorted(exported) and all(
                torch.equal(source[k], exported[k]) for k in source
            )
            result["roundtrip_logits_diff"][name] = max_diff(hf_logits(export_dir, tokens), reference)

    for name, hf_dir in models.items():
        arch = load_arch(hf_dir)
        tokens = fixed_batch(arch.vocab_size, batch=2, seq=32)
        reference = hf_logits(hf_dir, tokens)
        parity = result["parity"][name] = {}
        ckpt = {key: os.path.join(args.workdir, f"ckpt_{key}_{name}") for key in ("tp2", "pp2", "ep2")}
        logits = {}
        layouts = [Layout(1, 1), Layout(1, 2), Layout(2, 1)] + ([Layout(1, 1, 2)] if arch.moe else [])
        for layout in layouts:
            model, pg, logits[layout] = logits_at(hf_dir, layout, tokens)
            parity[f"tp{layout.tp}_pp{layout.pp}_ep{layout.ep}"] = max_diff(logits[layout], reference)
            packed = megatron_logits(model, pg, tokens, packed=True)  # the sequences in one THD row
            parity[f"tp{layout.tp}_pp{layout.pp}_ep{layout.ep}_packed"] = max_diff(packed, reference)
            if layout == Layout(1, 2):
                save_model(model, ckpt["pp2"])
            if layout == Layout(2, 1):
                save_model(model, ckpt["tp2"])
                if not arch.moe:
                    round_trip(name, hf_dir, model, pg, tokens, reference)
            if layout.ep == 2:  # experts through the EP export stream and a checkpoint saved at EP=2
                save_model(model, ckpt["ep2"])
                round_trip(name, hf_dir, model, pg, tokens, reference)
            dist.barrier()

        # Saved at PP=2, loaded at TP=2, and the reverse; a MoE saved at EP=2 loads at EP=1 and at TP=2.
        _, _, from_pp2 = logits_at(hf_dir, Layout(2, 1), tokens, ckpt=ckpt["pp2"])
        result["ckpt_pp2_to_tp2"][name] = max_diff(from_pp2, logits[Layout(2, 1)])
        _, _, from_tp2 = logits_at(hf_dir, Layout(1, 2), tokens, ckpt=ckpt["tp2"])
        result["ckpt_tp2_to_pp2"][name] = max_diff(from_tp2, logits[Layout(1, 2)])
        if arch.moe:
            _, _, from_ep2 = logits_at(hf_dir, Layout(1, 1), tokens, ckpt=ckpt["ep2"])
            result["ckpt_ep2_to_ep1"][name] = max_diff(from_ep2, logits[Layout(1, 1)])
            _, _, from_ep2 = logits_at(hf_dir, Layout(2, 1), tokens, ckpt=ckpt["ep2"])
            result["ckpt_ep2_to_tp2"][name] = max_diff(from_ep2, logits[Layout(2, 1)])

        # A model on groups of its own (PP=2, and EP=2 for a MoE) while the global state holds another
        # layout (TP=2), as the teacher and the student share one job.
        initialize_global_parallel(Layout(2, 1))
        _, _, own = logits_at(hf_dir, Layout(1, 2), tokens, own_groups=True)
        result["own_groups"][name] = max_diff(own, reference)
        if arch.moe:
            _, _, own = logits_at(hf_dir, Layout(1, 1, 2), tokens, own_groups=True)
            result["own_groups_ep2"][name] = max_diff(own, reference)
    if rank0:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
