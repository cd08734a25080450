"""What the student really allocates, for `tgpo plan` to be checked against (2 processes, CPU, fp32).

    torchrun --nproc-per-node 2 memory_worker.py --hf DIR --out RESULT.json

For the student at DP=2 and at TP=2: its parameters, DDP's gradient buffer and the distributed optimizer's
state on this rank (element counts, as built: the state exists before the first update, all zeros, with the
weights untouched); and, for packed micro-batches of three token budgets, with and without
full recompute, the bytes autograd keeps for backward through the model and the loss (storages counted once,
parameters excluded), which is what `tgpo plan` estimates as activations.
"""

import argparse
import json

import torch
import torch.distributed as dist

from tgpo_megatron.batching import Rollout, collate
from tgpo_megatron.config import ModelConfig, TrainerConfig
from tgpo_megatron.config.layouts import Layout
from tgpo_megatron.distributed.optimizer import megatron_optimizers
from tgpo_megatron.distributed.parallel import initialize_global_parallel
from tgpo_megatron.distributed.platform import init_distributed
from tgpo_megatron.losses import LossConfig, compute_loss
from tgpo_megatron.models.pipeline import model_forward
from tgpo_megatron.student import Student

BUDGETS = (256, 512, 1024)


def saved_bytes(student: Student, tokens: int) -> int:
    """Bytes of the distinct non-parameter storages autograd saves for one packed micro-batch's backward."""
    g = torch.Generator().manual_seed(tokens)
    rollouts, used = [], 0
    while used < tokens:  # sequences of 40-120 tokens, the last one trimmed to fill the budget exactly
        n = min(int(torch.randint(40, 121, (), generator=g)), tokens - used)
        if n < 2:
            break
        prompt = torch.randint(1, student.vocab_size, (n // 4 + 1,), generator=g).tolist()
        response = torch.randint(1, student.vocab_size, (n - len(prompt) + 1,), generator=g).tolist()
        per_token = {
            "old_logp": torch.full((len(response),), -2.0),
            "teacher_ids": torch.ones(len(response), dtype=torch.long),
        }
        rollouts.append(Rollout(prompt, response, per_token=per_token))
        used += rollouts[-1].length
    mb = collate(rollouts, ["old_logp", "teacher_ids"])
    params = {p.untyped_storage().data_ptr() for p in student.model.parameters()}
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    student.model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model_forward(student.model, mb)
        batch = {"labels": mb.labels, "loss_mask": mb.loss_mask, "advantages": mb.advantages, **mb.values}
        loss, _ = compute_loss(
            "tgpo_reg",
            logits,
            batch,
            step=1,
            config=LossConfig(),
            tp_group=student.pg.tp,
            vocab_size=student.vocab_size,
        )
    loss.backward()
    student.ddp.zero_grad_buffer()
    return sum(storages.values())


def optimizer_state(student: Student, hf: str) -> dict:
    """Adam's state as the student holds it before any update: element count, whether it is all zeros and
    whether every step counter is 0, and whether the weights are still exactly the HF file's."""
    from safetensors.torch import load_file

    from tgpo_megatron.models import export_hf_weights

    moments = [
        v
        for optimizer in megatron_optimizers(student.optimizer)
        for state in optimizer.optimizer.state.values()
        for k, v in state.items()
        if k in ("exp_avg", "exp_avg_sq")
    ]
    steps = [
        float(state["step"])
        for optimizer in megatron_optimizers(student.optimizer)
        for state in optimizer.optimizer.state.values()
    ]
    initial = load_file(f"{hf}/model.safetensors")
    weights_unchanged = all(torch.equal(t, initial[name]) for name, t in export_hf_weights(student.model, student.pg))
    return {
        "optimizer_state": sum(v.numel() for v in moments),
        "optimizer_state_zero": all(not v.any() for v in moments) and bool(steps) and not any(steps),
        "weights_unchanged": weights_unchanged,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hf", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    init_distributed()
    out = {}
    for name, tp in (("dp2", 1), ("tp2", 2)):
        pg = initialize_global_parallel(Layout(tp, 1))
        row = {}
        for recompute in ("none", "full"):
            student = Student(
                ModelConfig(hf_path=args.hf, tp=tp, recompute=recompute), TrainerConfig(), pg, torch.float32
            )
            if recompute == "none":  # as built: the optimizer's state already exists, nothing moved
                row.update(optimizer_state(student, args.hf))
            row[f"saved_bytes_{recompute}"] = {tokens: saved_bytes(student, tokens) for tokens in BUDGETS}
        row.update(
            parameters=sum(p.numel() for p in student.model.parameters()),
            grad_buffer=sum(b.grad_data.numel() for b in student.ddp.buffers),
        )
        out[name] = row
    if dist.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(out, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
