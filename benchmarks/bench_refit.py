"""Refit throughput (Megatron student -> colocated vLLM) against a plain copy of the same bytes, and vLLM
generation throughput, on a ~120M-parameter Qwen2-shaped model.

    python benchmarks/bench_refit.py                                         # 1 process, student TP=1
    torchrun --nproc-per-node 2 benchmarks/bench_refit.py --student-tp 2 --rollout-tp 1

A refit here is the whole path a training step pays: the export plan check, gathering each tensor over the
student's TP group (and PP broadcast), renaming to HF names, and vLLM's in-place layerwise reload with its
post-processing (on CPU: repacking every linear weight for oneDNN). The baseline copies the same tensors
into preallocated, already touched buffers (``copy_``), i.e. the memory bandwidth a perfect in-place update would need.
Rank 0 prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist

WARMUP = 2
MODEL = dict(
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=4,
    vocab_size=32000,
    max_position_embeddings=1024,
    tie_word_embeddings=False,
)


def plain_copy_seconds(tensors: list[torch.Tensor]) -> float:
    buffers = [torch.zeros_like(t) for t in tensors]  # touched first: page faults are not the copy's cost
    start = time.perf_counter()
    for buffer, tensor in zip(buffers, tensors):
        buffer.copy_(tensor)
    return time.perf_counter() - start


def export_seconds(model, pg) -> float:
    """Our side of a refit alone: the plan, then the stream (TP gather, PP broadcast, HF renaming)."""
    from tgpo_megatron.models.bridge import export_hf_weights, export_plan

    dist.barrier()
    start = time.perf_counter()
    export_plan(model, pg)
    for _ in export_hf_weights(model, pg):
        pass
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student-tp", type=int, default=1)
    p.add_argument("--student-pp", type=int, default=1)
    p.add_argument("--rollout-tp", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--tokens", type=int, default=64)
    args = p.parse_args()

    from tgpo_megatron.config.layouts import Layout
    from tgpo_megatron.distributed.parallel import initialize_global_parallel
    from tgpo_megatron.distributed.platform import init_distributed, torch_dtype
    from tgpo_megatron.models import build_from_hf
    from tgpo_megatron.models.bridge import export_hf_weights
    from tgpo_megatron.models.tiny import save_tiny_hf_model
    from tgpo_megatron.rollout import SamplingSpec, refit_from_megatron
    from tgpo_megatron.rollout.vllm_engine import VLLMEngine

    platform = init_distributed()
    rank0 = dist.get_rank() == 0
    dtype = torch_dtype("auto", platform)
    workdir = tempfile.mkdtemp(prefix="bench_refit_") if rank0 else None
    box = [workdir]
    dist.broadcast_object_list(box)
    hf_dir = os.path.join(box[0], "model")
    if rank0:
        save_tiny_hf_model(hf_dir, "qwen2", **MODEL)
    dist.barrier()
    layout = Layout(args.student_tp, args.student_pp)
    pg = initialize_global_parallel(layout)
    model = build_from_hf(hf_dir, layout, pg, dtype=dtype).eval()
    engine = VLLMEngine(
        hf_dir,
        eos_token_ids=[0],
        tp=args.rollout_tp,
        dtype=str(dtype).removeprefix("torch."),
        max_model_len=256,
        kv_cache_bytes=512 << 20,
        enforce_eager=True,
    )

    refits = []
    for _ in range(args.repeats + WARMUP):  # the first refits fault in vLLM's layer buffers: not counted
        dist.barrier()
        refits.append(refit_from_megatron(engine, model, pg))
    refits = refits[WARMUP:]
    export_s = statistics.median(export_seconds(model, pg) for _ in range(args.repeats))
    tensors = [t.clone() for _, t in export_hf_weights(model, pg)]
    copy_s = statistics.median(plain_copy_seconds(tensors) for _ in range(args.repeats))

    prompts = [[(7 * i + j) % 1000 + 10 for j in range(32)] for i in range(args.prompts)]
    sampling = SamplingSpec(n=args.n, temperature=1.0, max_tokens=args.tokens, seed=0)
    engine.generate(prompts[:2], sampling)
    dist.barrier()
    start = time.perf_counter()
    completions = engine.generate(prompts, sampling)
    gen_s = time.perf_counter() - start
    generated = sum(len(c.token_ids) for cs in completions for c in cs)

    if rank0:
        refit_s = statistics.median(r.seconds for r in refits)
        nbytes = refits[0].bytes
        params = sum(t.numel() for t in tensors)
        print(
            f"\nmodel {params / 1e6:.0f}M parameters, {dtype}, {nbytes / 1e9:.2f} GB per refit; "
            f"student TP{args.student_tp} PP{args.student_pp}, rollout TP{args.rollout_tp}, "
            f"{dist.get_world_size()} process(es), {platform.device.type}\n"
        )
        print("| measurement | seconds | GB/s | ratio to plain copy |")
        print("|---|---|---|---|")
        print(f"| plain copy_ of the same tensors | {copy_s:.3f} | {nbytes / copy_s / 1e9:.2f} | 1.00 |")
        print(
            f"| export stream alone (plan, gather, rename) | {export_s:.3f} | {nbytes / export_s / 1e9:.2f} | "
            f"{copy_s / export_s:.2f} |"
        )
        print(
            f"| refit: export + vLLM in-place reload (median of {args.repeats}) | {refit_s:.3f} | "
            f"{nbytes / refit_s / 1e9:.2f} | {copy_s / refit_s:.2f} |"
        )
        print(
            f"\ngeneration: {args.prompts} prompts x {args.n} samples, {generated} tokens in {gen_s:.2f} s = "
            f"{generated / gen_s:.0f} tokens/s"
        )
    dist.barrier()


if __name__ == "__main__":
    main()
