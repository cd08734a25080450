"""Packed micro-batches against per-sequence and padded forwards, at several layouts in one 2-process job.

    torchrun --nproc-per-node 2 packing_worker.py --hf DIR --out RESULT.pt

For each layout (TP=2, PP=2, DP=2): the largest difference between the logits of packed micro-batches and
the unpadded forward of each rollout alone; the teacher's ids packed and padded; and one student step of
``tgpo_reg`` and ``tgpo_fwd_topk`` on the same rollouts, packed and padded (loss, gradient norm, weights), and
packed with full activation recompute; at TP=2 also ``tgpo_reg`` with the engine-mismatch correction (``tis``),
packed and padded.
"""

import argparse

import torch
import torch.distributed as dist

from tgpo_megatron.batching import Rollout, attach, collate, pack
from tgpo_megatron.config import ModelConfig, TrainerConfig
from tgpo_megatron.config.layouts import Layout
from tgpo_megatron.distributed.parallel import initialize_global_parallel, model_process_groups
from tgpo_megatron.distributed.platform import init_distributed
from tgpo_megatron.losses import LossConfig, compute_loss
from tgpo_megatron.losses.coefficients import CorrectionConfig
from tgpo_megatron.losses.correction import correction_weights
from tgpo_megatron.models import export_hf_weights
from tgpo_megatron.models.pipeline import collect_forward, forward_per_rollout
from tgpo_megatron.student import Student
from tgpo_megatron.teacher import Teacher, TeacherRequest

BUDGET = 64
LAYOUTS = {"tp2": (2, 1), "pp2": (1, 2), "dp2": (1, 1)}
LOSS = LossConfig(lambda_init=0.5, topk=3)


def make_rollouts(vocab: int) -> list[Rollout]:
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (3, 30), (8, 1), (4, 9), (6, 70), (2, 12), (9, 20), (3, 3), (7, 25), (5, 16)]  # one > BUDGET
    rollouts = []
    for i, (p, r) in enumerate(shapes):
        rollouts.append(
            Rollout(
                torch.randint(1, vocab, (p,), generator=g).tolist(),
                torch.randint(1, vocab, (r,), generator=g).tolist(),
                advantage=float(torch.randn((), generator=g)) if i % 3 else 0.0,
            )
        )
    return rollouts


def max_over_ranks(value: float) -> float:
    t = torch.tensor(value, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def logits_diff(student: Student, rollouts) -> float:
    """Packed logits (this rank's vocabulary shard) against each rollout's own unpadded forward."""
    model, pg = student.model, student.pg
    keep = lambda logits, mb: {"logits": logits[..., :].float()}  # noqa: E731
    packed = forward_per_rollout(model, pg, rollouts, keep, pack([r.length for r in rollouts], BUDGET))
    worst = 0.0
    for r, got in zip(rollouts, packed):
        alone = collect_forward(model, pg, [collate([r], packed=False)], keep)
        if got is not None:
            worst = max(worst, (got["logits"] - alone[0]["logits"][0, len(r.prompt) - 1 : r.length]).abs().max().item())
    return worst


def student_step(
    hf: str, layout, packed: bool, rollouts, algorithm: str, recompute: str = "none", corrected: bool = False
) -> dict:
    pg = initialize_global_parallel(Layout(*layout))
    # adam_eps 1: the first Adam update is ~lr·g, not lr·sign(g), so weights compare gradients, not signs of ~0
    trainer = TrainerConfig(micro_batch_tokens=BUDGET, sequence_packing=packed, lr=1e-2, adam_eps=1.0, weight_decay=0.0)
    student = Student(
        ModelConfig(hf_path=hf, tp=layout[0], pp=layout[1], recompute=recompute), trainer, pg, torch.float32
    )
    result = {}
    if algorithm == "tgpo_reg" and recompute == "none":
        result["logits_diff"] = max_over_ranks(logits_diff(student, rollouts))
    keys = (
        ["old_logp", "teacher_ids"]
        if algorithm == "tgpo_reg"
        else ["old_logp", "teacher_topk_ids", "teacher_topk_probs"]
    ) + (["correction_weight"] if corrected else [])

    def loss_fn(logits, batch, normalizer):
        return compute_loss(
            algorithm,
            logits,
            batch,
            step=1,
            config=LOSS,
            tp_group=pg.tp,
            vocab_size=student.vocab_size,
            normalizer=normalizer,
        )

    metrics = student.train_step(student.plan(rollouts), keys, loss_fn)
    result.update(
        loss=metrics["loss/total"],
        grad_norm=metrics["optim/grad_norm"],
        weights={k: v.clone() for k, v in export_hf_weights(student.model, pg)},
    )
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hf", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    init_distributed()
    out = {}
    for name, layout in LAYOUTS.items():
        initialize_global_parallel(Layout(*layout))
        teacher_pg = model_process_groups(Layout(*layout))
        teachers = {
            packed: Teacher(
                ModelConfig(hf_path=args.hf, tp=layout[0], pp=layout[1]),
                teacher_pg,
                torch.float32,
                BUDGET,
                offload=False,
                packed=packed,
            )
            for packed in (True, False)
        }
        annotated = {}
        for packed, teacher in teachers.items():
            rollouts = make_rollouts(teacher.vocab_size)
            attach(rollouts, teacher.label(rollouts, TeacherRequest(topk=3), seed=0))
            annotated[packed] = rollouts
        out[name] = {
            "teacher_ids_equal": all(
                torch.equal(a.per_token["teacher_ids"], b.per_token["teacher_ids"])
                and torch.equal(a.per_token["teacher_topk_ids"], b.per_token["teacher_topk_ids"])
                for a, b in zip(annotated[True], annotated[False])
            ),
            "teacher_logp_diff": max(
                (a.per_token["teacher_logp"] - b.per_token["teacher_logp"]).abs().max().item()
                for a, b in zip(annotated[True], annotated[False])
            ),
        }
        rollouts = annotated[True]
        for r in rollouts:  # a fixed "old policy": the teacher's own log-probs, slightly perturbed
            r.per_token["old_logp"] = r.per_token["teacher_logp"] - 0.05
        for algorithm in ("tgpo_reg", "tgpo_fwd_topk"):
            for packed in (True, False):
                out[name][(algorithm, packed)] = student_step(args.hf, layout, packed, rollouts, algorithm)
        out[name]["recompute"] = student_step(args.hf, layout, True, rollouts, "tgpo_reg", recompute="full")
        if name == "tp2":  # engine log-probs 0.3 nats from π_old: about a sixth of the tokens truncated at C = 1.2
            g = torch.Generator().manual_seed(1)
            for r in rollouts:
                engine = r.per_token["old_logp"] + 0.3 * torch.randn(len(r.response), generator=g)
                weight, _ = correction_weights(engine, r.per_token["old_logp"], CorrectionConfig("tis", 1.2))
                r.per_token["correction_weight"] = weight
            for packed in (True, False):
                out[name][("tis", packed)] = student_step(args.hf, layout, packed, rollouts, "tgpo_reg", corrected=True)
    if dist.get_rank() == 0:
        torch.save(out, args.out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
