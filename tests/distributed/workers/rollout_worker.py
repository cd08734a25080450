"""vLLM rollouts colocated with a Megatron student: refit, parity with transformers and Megatron, bad refits.

    torchrun --nproc-per-node 2 rollout_worker.py --hf DIR --students 2x1,1x2 --rollout-tp 1 \
        --workdir W --out RESULT.json

One engine (vLLM starts once per process) serves each student layout (TPxPP) in turn, as the runs of one
launch share it; each layout's student is refit into it before its first generation (the first is compared
with the engine's own load of the checkpoint instead). Each later refit perturbs the student's weights first
(an elementwise function of the weights, so replicated copies stay identical), so a refit that did nothing
cannot pass.
"""

import argparse
import json
import os

import torch
import torch.distributed as dist

from tgpo_megatron.config.layouts import Layout
from tgpo_megatron.distributed.parallel import destroy_global_parallel, initialize_global_parallel
from tgpo_megatron.distributed.platform import init_distributed
from tgpo_megatron.models import build_from_hf
from tgpo_megatron.models.bridge import export_hf_weights
from tgpo_megatron.models.hf_export import write_hf_checkpoint
from tgpo_megatron.models.parity import hf_logits, megatron_logits
from tgpo_megatron.rollout import SamplingSpec, VLLMEngine, refit_from_megatron
from tgpo_megatron.rollout.drift import logprob_drift
from tgpo_megatron.rollout.refit import RefitError
from tgpo_megatron.rollout.vllm_engine import RolloutEngineError

PROMPTS = [[5, 17, 23, 42, 8], [9, 9, 30], [100, 3, 77, 12, 64, 2, 18], [44]]
GREEDY = SamplingSpec(n=1, temperature=0.0, max_tokens=12)


@torch.no_grad()
def perturb(model, amount: float):
    for param in model.parameters():
        param.add_(amount * torch.sin(1000.0 * param))


def sequences(prompts, completions):
    return [p + c[0].token_ids for p, c in zip(prompts, completions)]


def padded(seqs):
    width = max(map(len, seqs))
    return torch.tensor([s + [0] * (width - len(s)) for s in seqs])


def token_logps(logits, seqs, prompts):
    """log π(y_t) of each response token from full logits [b, s, V]."""
    logps = torch.log_softmax(logits.double(), dim=-1)
    out = []
    for row, (seq, prompt) in enumerate(zip(seqs, prompts)):
        positions = range(len(prompt), len(seq))
        out.append([logps[row, t - 1, seq[t]].item() for t in positions])
    return out


def compare(engine, model, pg, export_dir):
    completions = engine.generate(PROMPTS, GREEDY)
    seqs = sequences(PROMPTS, completions)
    tokens = padded(seqs)
    mega = token_logps(megatron_logits(model, pg, tokens), seqs, PROMPTS)
    vllm_lp = [c[0].logprobs for c in completions]
    write_hf_checkpoint(export_hf_weights(model, pg), export_dir, model.arch, write=dist.get_rank() == 0)
    dist.barrier()
    logits = hf_logits(export_dir, tokens)
    hf = token_logps(logits, seqs, PROMPTS)
    hf_argmax_agrees = all(
        int(logits[b, t - 1].argmax()) == seqs[b][t]
        for b in range(len(seqs))
        for t in range(len(PROMPTS[b]), len(seqs[b]))
    )
    flat = lambda rows: torch.tensor([x for r in rows for x in r], dtype=torch.float64)
    drift = logprob_drift(flat(vllm_lp), flat(mega), torch.ones(sum(map(len, mega))))
    return {
        "responses": [c[0].token_ids for c in completions],
        "finish": [c[0].finish_reason for c in completions],
        "vllm_vs_megatron": (flat(vllm_lp) - flat(mega)).abs().max().item(),
        "vllm_vs_hf": (flat(vllm_lp) - flat(hf)).abs().max().item(),
        "megatron_vs_hf": (flat(mega) - flat(hf)).abs().max().item(),
        "hf_greedy_agrees": hf_argmax_agrees,
        "drift": {k: float(v) for k, v in drift.items()},
    }


def check_student(engine, layout: Layout, hf: str, workdir: str, first: bool) -> dict:
    pg = initialize_global_parallel(layout)
    model = build_from_hf(hf, layout, pg).eval()
    if not first:  # the engine holds the previous layout's weights
        refit_from_megatron(engine, model, pg)
    before = engine.generate(PROMPTS, GREEDY)
    result = {"before": [c[0].token_ids for c in before], "before_finish": [c[0].finish_reason for c in before]}

    for refit in (1, 2):
        perturb(model, 0.05 * refit)
        stats = refit_from_megatron(engine, model, pg)
        result[f"refit{refit}"] = compare(engine, model, pg, os.path.join(workdir, f"export{refit}"))
        result[f"refit{refit}"]["refit_bytes"] = stats.bytes

    # a stream with a misnamed tensor, then one with a wrong shape: the error names it, generation refuses
    def renamed(stream):
        for i, (name, tensor) in enumerate(stream):
            yield (name + ".extra" if i == 5 else name), tensor

    def reshaped(stream):
        for i, (name, tensor) in enumerate(stream):
            yield name, (tensor[:-1] if i == 5 else tensor)

    errors = {}
    for label, corrupt in (("name", renamed), ("shape", reshaped)):
        try:
            engine.update_weights(corrupt(export_hf_weights(model, pg)))
        except RefitError as e:
            errors[label] = str(e)
        try:
            engine.generate(PROMPTS, GREEDY)
            errors[label + "_generate"] = "generated"
        except RolloutEngineError as e:
            errors[label + "_generate"] = str(e)
    result["errors"] = errors
    refit_from_megatron(engine, model, pg)
    result["after_recovery"] = compare(engine, model, pg, os.path.join(workdir, "export3"))
    sampled = engine.generate(PROMPTS, SamplingSpec(n=3, temperature=1.0, max_tokens=8, seed=11))
    again = engine.generate(PROMPTS, SamplingSpec(n=3, temperature=1.0, max_tokens=8, seed=11))
    result["sampling"] = {
        "n": [len(c) for c in sampled],
        "reproducible": [[x.token_ids for x in c] for c in sampled] == [[x.token_ids for x in c] for c in again],
        "distinct": len({tuple(x.token_ids) for c in sampled for x in c}),
    }
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, result)
    result["ranks_agree"] = all(g == gathered[0] for g in gathered)
    destroy_global_parallel()
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hf", required=True)
    p.add_argument("--students", required=True, help="student layouts TPxPP, comma-separated")
    p.add_argument("--rollout-tp", type=int, required=True)
    p.add_argument("--eos", type=int, required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    init_distributed()
    engine = VLLMEngine(
        args.hf,
        eos_token_ids=[args.eos],
        tp=args.rollout_tp,
        dtype="float32",
        max_model_len=128,
        kv_cache_bytes=64 << 20,
        enforce_eager=True,
    )
    results = {}
    for i, name in enumerate(args.students.split(",")):
        tp, pp = map(int, name.split("x"))
        workdir = os.path.join(args.workdir, name)
        results[name] = check_student(engine, Layout(tp, pp), args.hf, workdir, first=i == 0)
    if dist.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    dist.barrier()


if __name__ == "__main__":
    main()
