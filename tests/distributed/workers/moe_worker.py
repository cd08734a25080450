"""A mixture-of-experts teacher and student in one 2-process job.

    torchrun --nproc-per-node 2 moe_worker.py --moe MOE_DIR --dense DENSE_DIR --out RESULT.pt

The teacher (Qwen3-MoE at EP=2, on its own process groups) labels rollouts beside a dense student at TP=2
(Megatron's global state), and transformers computes the same statistics on each sequence alone. Then one
student step of a MoE student at EP=2 and at EP=1 on the same rollouts (loss, router aux loss, grad norm,
weights).
"""

import argparse
import os

import torch
import torch.distributed as dist
from packing_worker import BUDGET, make_rollouts  # beside this script, on sys.path
from safetensors.torch import load_file

from tgpo_megatron.batching import attach
from tgpo_megatron.config import ModelConfig, TrainerConfig
from tgpo_megatron.config.layouts import Layout
from tgpo_megatron.distributed.parallel import initialize_global_parallel, model_process_groups
from tgpo_megatron.distributed.platform import init_distributed
from tgpo_megatron.losses import LossConfig, compute_loss
from tgpo_megatron.models import export_hf_weights
from tgpo_megatron.student import Student
from tgpo_megatron.teacher import Teacher

LOSS = LossConfig(lambda_init=0.5)


def transformers_stats(hf_dir: str, rollouts) -> list[dict]:
    """Per rollout: the argmax id and log p(y_t) at each response token, each sequence run alone."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for r in rollouts:
            sequence = torch.tensor([r.prompt + r.response])
            logits = model(sequence).logits[0, len(r.prompt) - 1 : -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            out.append({"ids": logits.argmax(-1), "logp": logp.gather(-1, torch.tensor(r.response)[:, None])[:, 0]})
    return out


def student_step(hf: str, ep: int, rollouts) -> dict:
    pg = initialize_global_parallel(Layout(1, 1, ep))
    trainer = TrainerConfig(micro_batch_tokens=BUDGET, lr=1e-2, adam_eps=1.0, weight_decay=0.0)
    student = Student(ModelConfig(hf_path=hf, ep=ep), trainer, pg, torch.float32)

    def loss_fn(logits, batch, normalizer):
        return compute_loss(
            "tgpo_reg",
            logits,
            batch,
            step=1,
            config=LOSS,
            tp_group=pg.tp,
            vocab_size=student.vocab_size,
            normalizer=normalizer,
        )

    metrics = student.train_step(student.plan(rollouts), ["old_logp", "teacher_ids"], loss_fn)
    weights = {k: v.clone() for k, v in export_hf_weights(student.model, pg)}
    before = load_file(os.path.join(hf, "model.safetensors"))
    experts_moved = max((weights[k] - before[k]).abs().max().item() for k in weights if ".experts." in k)
    return {"metrics": metrics, "weights": weights, "experts_moved": experts_moved}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--moe", required=True)
    p.add_argument("--dense", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    init_distributed()
    out = {}

    pg = initialize_global_parallel(Layout(2, 1))
    Student(ModelConfig(hf_path=args.dense, tp=2), TrainerConfig(micro_batch_tokens=BUDGET), pg, torch.float32)
    teacher = Teacher(
        ModelConfig(hf_path=args.moe, ep=2), model_process_groups(Layout(1, 1, 2)), torch.float32, BUDGET, offload=False
    )
    rollouts = make_rollouts(teacher.vocab_size)
    attach(rollouts, teacher.label(rollouts, seed=0))
    if dist.get_rank() == 0:
        reference = transformers_stats(args.moe, rollouts)
        out["teacher"] = {
            "ids_differing": sum(
                int((r.per_token["teacher_ids"] != ref["ids"]).sum()) for r, ref in zip(rollouts, reference)
            ),
            "tokens": sum(len(r.response) for r in rollouts),
            "logp_diff": max(
                (r.per_token["teacher_logp"] - ref["logp"]).abs().max().item() for r, ref in zip(rollouts, reference)
            ),
        }

    for r in rollouts:  # a fixed "old policy": the teacher's own log-probs, slightly perturbed
        r.per_token["old_logp"] = r.per_token["teacher_logp"] - 0.05
    out["student"] = {ep: student_step(args.moe, ep, rollouts) for ep in (1, 2)}
    if dist.get_rank() == 0:
        torch.save(out, args.out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
