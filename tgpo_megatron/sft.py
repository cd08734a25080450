"""Supervised fine-tuning with the trainer's machinery: token-mean cross-entropy on reference responses.

    tgpo sft --config R.yaml [section.key=value ...]
    torchrun --nproc-per-node 2 -m tgpo_megatron.cli sft --config R.yaml student.tp=2

Uses the recipe's ``student`` (the model to train), ``data`` (rows with a reference response: ``solution``
in the plain layout, ``target`` in the verl one), ``trainer`` (steps, ``prompts_per_step`` as the batch size,
lr and warm-up, micro-batch token budget, output_dir) and ``sft`` sections. Writes Megatron checkpoints like
``tgpo train`` and an HF export (with the tokenizer) to ``<output_dir>/hf``, ready to be a student or teacher.
"""

from __future__ import annotations

import functools
import logging
import os
import random

import torch
import torch.distributed as dist

from tgpo_megatron.batching import Rollout
from tgpo_megatron.checkpointing import Checkpoints
from tgpo_megatron.config import Config, save_config
from tgpo_megatron.data import load_prompts
from tgpo_megatron.data.sampler import PromptSampler
from tgpo_megatron.data.tokenizer import load_tokenizer
from tgpo_megatron.errors import UserError
from tgpo_megatron.losses import token_stats
from tgpo_megatron.metrics import MetricsLogger, NullLogger, Timer
from tgpo_megatron.parallel import initialize_global_parallel
from tgpo_megatron.platform import init_distributed, torch_dtype
from tgpo_megatron.seeds import derive_seed
from tgpo_megatron.student import Student

log = logging.getLogger(__name__)


def nll_loss(logits, batch, normalizer: float, *, vocab_size: int, tp_group):
    """``-Σ_t m_t log π(y_t) / N`` on the vocabulary shard of the logits."""
    (logp,), entropy = token_stats(logits, [batch["labels"]], vocab_size=vocab_size, tp_group=tp_group)
    mask = batch["loss_mask"]
    tokens = mask.sum().clamp(min=1)
    return (-logp * mask).sum() / normalizer, {
        "loss/nll": (-logp * mask).sum().detach() / tokens,
        "loss/entropy": (entropy * mask).sum().detach() / tokens,
    }


def swap_input(response: list[int], pairs: dict[int, int], prob: float, rng: random.Random):
    """The response as the model reads it (swapped tokens) and the loss weights (0 where swapped)."""
    read, weight = [], []
    for token in response:
        swapped = token in pairs and rng.random() < prob
        read.append(pairs[token] if swapped else token)
        weight.append(0.0 if swapped else 1.0)
    return read, torch.tensor(weight)


def sft(config: Config) -> str:
    """Train; returns the HF export directory."""
    platform = init_distributed()
    trainer, rank0 = config.trainer, dist.get_rank() == 0
    torch.manual_seed(trainer.seed)
    pg = initialize_global_parallel(config.student.layout)
    tokenizer = load_tokenizer(config.student.tokenizer_path)
    dataset = load_prompts(config.data.train_files, tokenizer, config.data)
    examples = [e for e in dataset.examples if e.target]
    if not examples:
        raise UserError(
            f"{config.data.train_files}: no row has a reference response "
            f"('{config.data.response_key}' or verl 'target') to fine-tune on"
        )
    targets = [tokenizer(e.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for e in examples]
    pairs = {}
    for a, b in config.sft.swap_tokens:
        ids_a, ids_b = tokenizer.convert_tokens_to_ids([a, b])
        pairs.update({ids_a: ids_b, ids_b: ids_a})
    student = Student(config.student, trainer, pg, torch_dtype(config.student.dtype, platform))
    sampler = PromptSampler(len(examples), trainer.prompts_per_step, seed=config.data.seed, shuffle=config.data.shuffle)
    checkpoints = Checkpoints(os.path.join(trainer.output_dir, "checkpoints"), trainer.keep_last_n)
    step = 0
    latest = checkpoints.latest() if os.path.isdir(checkpoints.root) else None
    if latest:
        state = checkpoints.load(latest[1], student)
        sampler.load_state_dict(state["sampler"])
        step = state["step"]
    if rank0:
        os.makedirs(checkpoints.root, exist_ok=True)
        save_config(config, os.path.join(trainer.output_dir, "config.yaml"))
    logger = (
        MetricsLogger(
            trainer.output_dir, trainer.tensorboard, trainer.wandb_project, config.to_dict(), resume_step=step
        )
        if rank0
        else NullLogger()
    )
    while step < trainer.steps:
        step += 1
        timer = Timer()
        with timer("step"):
            rng = random.Random(derive_seed(trainer.seed, "input-augmentation", step))
            batch = sampler.next_batch()
            rollouts = []
            for i in batch:
                read, weight = swap_input(targets[i], pairs, config.sft.swap_prob, rng)
                rollouts.append(
                    Rollout(
                        list(examples[i].prompt_ids), targets[i], input_response=read, per_token={"loss_weight": weight}
                    )
                )
            student.set_learning_rate(trainer.lr * min(1.0, step / max(trainer.lr_warmup_steps, 1)))
            loss_fn = functools.partial(nll_loss, vocab_size=student.vocab_size, tp_group=pg.tp)
            metrics = student.train_step(rollouts, [], loss_fn)
        logger.log(step, {**metrics, **timer.seconds})
        if step % trainer.save_every == 0 or step == trainer.steps:
            checkpoints.save(step, student, {"sampler": sampler.state_dict()})
        if config.sft.export_every and step % config.sft.export_every == 0:
            student.export_hf(os.path.join(trainer.output_dir, f"hf_step{step:06d}"), config.student.tokenizer_path)
    logger.close()
    return student.export_hf(os.path.join(trainer.output_dir, "hf"), config.student.tokenizer_path)


def main(argv=None) -> int:
    import argparse

    from tgpo_megatron.config import load_config
    from tgpo_megatron.errors import exit_on_user_error

    p = argparse.ArgumentParser(
        prog="tgpo sft",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @exit_on_user_error
    def run() -> int:
        print(sft(load_config(args.config, args.overrides)))
        return 0

    return run()
