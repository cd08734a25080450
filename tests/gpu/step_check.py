"""One teacher label, one old-log-prob pass and one student update of tiny models on the accelerator, with
the memory each phase took; packed micro-batches against the padded path on the same rollouts.

    python tests/gpu/step_check.py            # on a CUDA machine (bf16); bash tests/gpu/run_all.sh runs it
    torchrun --nproc-per-node 2 tests/gpu/step_check.py --transformer-impl transformer_engine --tp 2 \
        --sequence-parallel --recompute full  # the shipped recipes' student settings with Transformer Engine
    python tests/gpu/step_check.py --dtype float32   # also runs on CPU, as a smoke check of the script

What a GPU shows here and a CPU cannot: every tensor the models and the collectives see is on the device
(a batch left on the host fails in the embedding), and the memory by phase (``max_memory_allocated``).
Exits 1 when packed and padded disagree beyond bf16 (or fp32) tolerance.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch

from tgpo_megatron.batching import Rollout, attach
from tgpo_megatron.config import ModelConfig, TrainerConfig
from tgpo_megatron.config.layouts import Layout
from tgpo_megatron.distributed.parallel import initialize_global_parallel, model_process_groups
from tgpo_megatron.distributed.platform import init_distributed
from tgpo_megatron.losses import LossConfig, compute_loss
from tgpo_megatron.models.tiny import save_tiny_hf_model
from tgpo_megatron.student import Student
from tgpo_megatron.teacher import Teacher


def rollouts(vocab: int) -> list[Rollout]:
    g = torch.Generator().manual_seed(0)
    return [
        Rollout(
            torch.randint(1, vocab, (int(torch.randint(8, 40, (), generator=g)),), generator=g).tolist(),
            torch.randint(1, vocab, (int(torch.randint(1, 200, (), generator=g)),), generator=g).tolist(),
            advantage=float(torch.randn((), generator=g)),
        )
        for _ in range(24)
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--transformer-impl", default="local", choices=["local", "transformer_engine"])
    p.add_argument("--tp", type=int, default=1, help="the student's tensor parallelism (run under torchrun)")
    p.add_argument("--sequence-parallel", action="store_true", help="the student's (TP > 1, Transformer Engine)")
    p.add_argument("--recompute", default="none", choices=["none", "full"])
    args = p.parse_args()
    platform = init_distributed()
    say = print if torch.distributed.get_rank() == 0 else (lambda *a, **k: None)
    say(
        f"student {args.transformer_impl} TP{args.tp}{' SP' if args.sequence_parallel else ''} "
        f"recompute {args.recompute}, teacher {args.transformer_impl} TP1, {args.dtype}, {platform.device}"
    )
    cuda = platform.device.type == "cuda"
    dtype = getattr(torch, args.dtype)
    hf = [None]
    if torch.distributed.get_rank() == 0:  # one model for every rank
        hf[0] = save_tiny_hf_model(
            f"{tempfile.mkdtemp()}/model",
            "qwen2",
            vocab_size=1024,
            hidden_size=256,
            intermediate_size=512,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
        )
    torch.distributed.broadcast_object_list(hf, src=0)
    hf = hf[0]
    student_config = ModelConfig(
        hf_path=hf,
        dtype=args.dtype,
        transformer_impl=args.transformer_impl,
        tp=args.tp,
        recompute=args.recompute,
        sequence_parallel=args.sequence_parallel,
    )
    pg = initialize_global_parallel(student_config.layout)
    results, memory = {}, {}

    def phase(name):
        if cuda:
            torch.cuda.synchronize()
            memory[name] = torch.cuda.max_memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()

    for packed in (True, False):
        teacher = Teacher(
            ModelConfig(hf_path=hf, dtype=args.dtype, transformer_impl=args.transformer_impl),
            model_process_groups(Layout(1, 1)),
            dtype,
            token_budget=1024,
            offload=True,
            packed=packed,
        )
        student = Student(
            student_config,
            TrainerConfig(micro_batch_tokens=1024, sequence_packing=packed, lr=1e-5),
            pg,
            dtype,
        )
        phase("build")
        batch = rollouts(student.vocab_size)
        attach(batch, teacher.label(batch, seed=0))
        phase("teacher label")
        mini_batch = student.plan(batch)
        for r, (logp,) in zip(mini_batch.local, student.token_logprobs([mini_batch])):
            r.per_token["old_logp"] = logp
        phase("old log-probs")

        def loss_fn(logits, b, normalizer, student=student):
            return compute_loss(
                "tgpo_reg",
                logits,
                b,
                step=1,
                config=LossConfig(lambda_init=0.5),
                tp_group=student.pg.tp,
                vocab_size=student.vocab_size,
                normalizer=normalizer,
            )

        metrics = student.train_step(mini_batch, ["old_logp", "teacher_ids"], loss_fn)
        phase("student update")
        results[packed] = (batch, metrics)
        say(
            f"{'packed' if packed else 'padded'}: loss {metrics['loss/total']:.6f} grad_norm "
            f"{metrics['optim/grad_norm']:.6f}; " + ", ".join(f"{k} {v:.0f} MiB" for k, v in memory.items())
        )
        student.close()
        del teacher, student
    (packed_batch, packed_metrics), (padded_batch, padded_metrics) = results[True], results[False]
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5
    ids_equal = sum(
        int(torch.equal(a.per_token["teacher_ids"], b.per_token["teacher_ids"]))
        for a, b in zip(packed_batch, padded_batch)
    )
    loss_diff = abs(packed_metrics["loss/total"] - padded_metrics["loss/total"])
    ok = loss_diff <= tolerance * max(abs(padded_metrics["loss/total"]), 1.0)
    say(
        f"teacher ids equal for {ids_equal}/{len(packed_batch)} rollouts; |Δloss| {loss_diff:.2e} "
        f"(tolerance {tolerance:.0e}): {'OK' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
