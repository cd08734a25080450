"""Megatron-Core's distributed optimizer for the student, and what 0.16.1 needs around it: Adam's state created
before vLLM measures the free memory, and Adam's step counts restored after a checkpoint load."""

from __future__ import annotations

import torch
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

from tgpo_megatron.config import TrainerConfig


def build_optimizer(ddp, trainer: TrainerConfig, dtype: torch.dtype):
    """Adam (decoupled weight decay) over the DDP-wrapped model, sharded over data parallelism, gradients
    clipped at ``trainer.grad_clip``; the learning rate is set per step (``Student.set_learning_rate``)."""
    return get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=trainer.lr,
            min_lr=trainer.lr,
            weight_decay=trainer.weight_decay,
            adam_beta1=trainer.adam_beta1,
            adam_beta2=trainer.adam_beta2,
            adam_eps=trainer.adam_eps,
            clip_grad=trainer.grad_clip,
            use_distributed_optimizer=True,
            bf16=dtype == torch.bfloat16,
            params_dtype=dtype,
        ),
        [ddp],
    )


def megatron_optimizers(optimizer) -> list:
    """The optimizers a (possibly chained: dense and expert parameters) Megatron optimizer is made of."""
    return getattr(optimizer, "chained_optimizers", [optimizer])


def materialize_state(optimizer) -> None:
    """Create Adam's state now rather than at the first update: on GPU, memory that appears after vLLM has
    measured what is free can make its first wake fail, and a checkpoint's optimizer state needs tensors to load
    into. Megatron's zero-gradient step with learning rate and weight decay 0 creates it without moving a
    weight; the step counters then go back to 0, as a fresh optimizer's."""
    parts = megatron_optimizers(optimizer)
    groups = [g for part in parts for g in part.optimizer.param_groups]
    settings = [(g["lr"], g["weight_decay"]) for g in groups]
    for g in groups:
        g["lr"], g["weight_decay"] = 0.0, 0.0
    for part in parts:
        part._init_optimizer_states_with_dummy_values()
    for g, (lr, weight_decay) in zip(groups, settings):
        g["lr"], g["weight_decay"] = lr, weight_decay
        if "step" in g:  # fused Adam counts per group, torch's Adam per parameter
            g["step"] = 0
    for part in parts:
        for param_state in part.optimizer.state.values():
            if "step" in param_state:
                param_state["step"].zero_()


def load_state(optimizer, saved: dict) -> None:
    """Load a checkpoint's optimizer state. Megatron 0.16's dp_reshardable load gives torch Adam's parameters
    one shared 'step' tensor (so every update advances it once per parameter) and then copies the dummy step's
    value into it; Adam's bias correction would be wrong from then on. Each parameter gets its own step, with
    the saved value."""
    parts = megatron_optimizers(optimizer)
    states = [saved] if len(parts) == 1 else [saved[i] for i in range(len(parts))]
    steps = [float(state["optimizer"]["param_groups"][0]["step"]) for state in states]
    with torch.no_grad():  # fp32 main params are views of the (trainable) model params
        optimizer.load_state_dict(saved)
    for part, step in zip(parts, steps):
        if isinstance(part.optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            for param_state in part.optimizer.state.values():
                param_state["step"] = torch.tensor(step, dtype=torch.float32)
