"""Supervised fine-tuning with the trainer's machinery: token-mean cross-entropy on reference responses.

    tgpo sft --config R.yaml [section.key=value ...]
    torchrun --nproc-per-node 2 -m tgpo_megatron.cli sft --config R.yaml student.tp=2

Uses the recipe's ``student`` (the model to train), ``data`` (rows with a reference response: ``solution``
in the plain layout, ``target`` in the verl one), ``trainer`` (steps, ``prompts_per_step`` as the batch size,
lr and warm-up, micro-batch token budget, output_dir) and ``sft`` sections. It runs on the trainer's loop
(``tgpo_megatron/run/loop.py``): the same resume, checkpoints, STOP requests, divergence stop and exit codes.
Writes an HF export (with the tokenizer) to ``<output_dir>/hf``, ready to be a student or teacher.
"""

from __future__ import annotations

import functools
import logging
import os
import random

import torch
import torch.distributed as dist

from tgpo_megatron.batching import Rollout
from tgpo_megatron.config import Config
from tgpo_megatron.data import load_prompts
from tgpo_megatron.data.sampler import PromptSampler
from tgpo_megatron.data.tokenizer import load_tokenizer
from tgpo_megatron.distributed.parallel import initialize_global_parallel
from tgpo_megatron.distributed.platform import init_distributed, torch_dtype
from tgpo_megatron.errors import UserError
from tgpo_megatron.losses import token_stats
from tgpo_megatron.run.layout import RunDir
from tgpo_megatron.run.loop import open_run, run_command, run_steps
from tgpo_megatron.run.metrics import Timer
from tgpo_megatron.seeds import derive_seed
from tgpo_megatron.student import Student

log = logging.getLogger(__name__)


def nll_loss(logits, batch, normalizer: float, *, vocab_size: int, tp_group, chunk_tokens: int):
    """``-Σ_t m_t log π(y_t) / N`` on the vocabulary shard of the logits."""
    (logp,), entropy = token_stats(
        logits, [batch["labels"]], vocab_size=vocab_size, tp_group=tp_group, chunk_tokens=chunk_tokens
    )
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
    """Train (or resume), on the trainer's loop; returns the HF export directory."""
    platform = init_distributed()
    trainer = config.trainer
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
    chunk_tokens = config.algorithm.chunk_tokens
    student = Student(config.student, trainer, pg, torch_dtype(config.student.dtype, platform), chunk_tokens)
    sampler = PromptSampler(len(examples), trainer.prompts_per_step, seed=config.data.seed, shuffle=config.data.shuffle)
    run = open_run(config, student, sampler)
    loss_fn = functools.partial(nll_loss, vocab_size=student.vocab_size, tp_group=pg.tp, chunk_tokens=chunk_tokens)

    def step_fn(step: int) -> dict:
        timer = Timer()
        with timer("step"):
            rng = random.Random(derive_seed(trainer.seed, "input-augmentation", step))
            rollouts = []
            for i in sampler.next_batch():
                read, weight = swap_input(targets[i], pairs, config.sft.swap_prob, rng)
                rollouts.append(
                    Rollout(
                        list(examples[i].prompt_ids), targets[i], input_response=read, per_token={"loss_weight": weight}
                    )
                )
            student.set_learning_rate(trainer.learning_rate(step))
            metrics = student.train_step(student.plan(rollouts), [], loss_fn)
        return {**metrics, **timer.seconds}

    def export_if_due(step: int) -> dict:
        if config.sft.export_every and step % config.sft.export_every == 0:
            student.export_hf(os.path.join(trainer.output_dir, f"hf_step{step:06d}"), config.student.tokenizer_path)
        return {}

    try:
        run_steps(config, run, step_fn, export_if_due)
    finally:
        run.logger.close()
    out = student.export_hf(RunDir(trainer.output_dir).hf, config.student.tokenizer_path)
    if dist.get_rank() == 0:
        print(out, flush=True)
    return out


def main(argv=None) -> int:
    return run_command("tgpo sft", __doc__, sft, argv)
