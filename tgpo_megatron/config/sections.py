"""The recipe's sections: typed dataclasses, each field documented (docs/configuration.md is generated from
them), single-field checks in ``__post_init__`` (checks that span fields, files or models: ``validation``)."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Optional

from tgpo_megatron.config.layouts import Layout
from tgpo_megatron.errors import UserError
from tgpo_megatron.losses.coefficients import CorrectionConfig, LossConfig
from tgpo_megatron.losses.registry import ALGORITHM_NAMES

# LUFFY's system prompt, which TGPO keeps for training and evaluation. Its "\n" are newlines, as in the
# authors' data files.
LUFFY_SYSTEM_PROMPT = (
    "Your task is to follow a systematic, thorough reasoning process before providing the final solution. "
    "This involves analyzing, summarizing, exploring, reassessing, and refining your thought process through "
    "multiple iterations. Structure your response into two sections: Thought and Solution. In the Thought "
    'section, present your reasoning using the format: "<think>\n {thoughts} </think>\n". Each thought should '
    'include detailed analysis, brainstorming, verification, and refinement of ideas. After "</think>\n," in '
    "the Solution section, provide the final, logical, and accurate answer, clearly derived from the exploration "
    "in the Thought section. If applicable, include the answer in \\boxed{} for closed-form results like "
    "multiple choices or mathematical solutions."
)


class ConfigError(UserError):
    """A recipe or override that does not fit the schema; the message names the dotted key."""


EVAL_JUDGE_NAMES = ("math", "choice")
"""The judges an evaluation set can name: the keys of ``rewards.EVAL_JUDGES`` (which imports what they run)."""
DTYPES = ("auto", "bfloat16", "float32")
"""A model's or the engine's dtype in a recipe: ``auto`` is bfloat16 on GPU and float32 on CPU."""


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} must be one of {', '.join(DTYPES)}")


@dataclass
class ModelConfig:
    """A Megatron-Core model built from a Hugging Face directory."""

    hf_path: str = ""
    """HF directory: config.json, tokenizer and (unless ``checkpoint`` is set) safetensors weights."""
    checkpoint: Optional[str] = None
    """A Megatron checkpoint to load instead of the HF weights."""
    tokenizer: Optional[str] = None
    """Tokenizer directory when it is not ``hf_path``."""
    tp: int = 1
    """Tensor parallelism: each of ``tp`` ranks holds a slice of every layer (it must divide the
    attention and KV heads)."""
    pp: int = 1
    """Pipeline parallelism: the layers in ``pp`` consecutive stages (Megatron's 1F1B schedule)."""
    ep: int = 1
    """Expert parallelism (mixture-of-experts models): each of ``ep`` ranks holds ``num_experts / ep`` experts."""
    dtype: str = "auto"
    """``auto`` (bfloat16 on GPU, float32 on CPU), ``bfloat16`` or ``float32``."""
    transformer_impl: str = "local"
    """``local`` (torch SDPA attention, runs anywhere) or ``transformer_engine``."""
    recompute: str = "none"
    """Activation recompute in training: ``none``, or ``full`` (keep each layer's input only and recompute the
    layer in backward: about a third more compute for a fraction of the activation memory; `tgpo plan`)."""
    sequence_parallel: bool = False
    """Split the norms' and residuals' activations over the TP ranks along the sequence (tp > 1, Transformer
    Engine spec: Megatron's torch norms do not support it)."""

    def __post_init__(self):
        self.layout  # noqa: B018 (the layout checks its own sizes)
        check_dtype(self.dtype)
        if self.transformer_impl not in ("local", "transformer_engine"):
            raise ValueError(f"transformer_impl={self.transformer_impl!r} must be local or transformer_engine")
        if self.recompute not in ("none", "full"):
            raise ValueError(f"recompute={self.recompute!r} must be none or full")
        if self.sequence_parallel and (self.tp == 1 or self.transformer_impl != "transformer_engine"):
            raise ValueError("sequence_parallel needs tp > 1 and transformer_impl=transformer_engine")

    @property
    def tokenizer_path(self) -> str:
        return self.tokenizer or self.hf_path

    @property
    def layout(self) -> Layout:
        return Layout(self.tp, self.pp, self.ep)


@dataclass
class TeacherConfig(ModelConfig):
    """The frozen teacher: a model, and what its id space may differ in from the student's."""

    allow_id_collisions: bool = False
    """Train although ``tools/align_tokenizer.py --allow-id-collisions`` recorded ids whose added tokens mean
    different text to the two models (e.g. an R1-Distill-Qwen teacher and a Qwen2.5 student); they are logged
    at start. The authors' teacher-ladder runs used such pairs."""


PLACEMENTS = ("colocated", "separate")


@dataclass
class RolloutConfig:
    """The colocated vLLM engine and the training-time sampling (docs/method.md §4)."""

    tp: int = 1
    """vLLM's tensor-parallel size, independent of the student's layout; it must divide the world size."""
    n: int = 8
    """Rollouts per prompt (G)."""
    temperature: float = 1.0
    """Sampling temperature of the training rollouts (the paper: 1.0)."""
    top_p: float = 1.0
    """Nucleus sampling of the training rollouts (1.0: off)."""
    top_k: int = -1
    """Top-k sampling of the training rollouts (-1: off)."""
    max_response_length: int = 8192
    """Response tokens at most; a longer response is cut and counted in ``rollout/truncated``."""
    dtype: str = "auto"
    """vLLM's dtype: ``auto`` (bfloat16 on GPU, float32 on CPU), ``bfloat16`` or ``float32``."""
    gpu_memory_utilization: float = 0.5
    """vLLM's share of the whole GPU (weights, KV cache, buffers), which must be free beside the
    student when it starts: ``tgpo plan`` prints the most a recipe can give."""
    kv_cache_gb: Optional[float] = None
    """A fixed KV-cache size; on CPU prefer it to ``gpu_memory_utilization`` (a fraction of host RAM)."""
    enforce_eager: bool = False
    """Run vLLM without CUDA graphs (slower decoding; saves the graphs' memory, about 1 GiB)."""
    drift_warn_threshold: float = 1.1
    """Warn when ``rollout/token_mult_prob_error`` (mean exp|Δ log p|) exceeds it."""
    correction: CorrectionConfig = field(default_factory=CorrectionConfig)
    """The policy gradient's correction for the engine's log-probs differing from the trainer's (method.md §8)."""
    placement: str = "colocated"
    """``colocated``: vLLM in every training process, asleep while the student trains (the paper's setup);
    ``separate``: vLLM on ``rollout.ranks`` ranks of its own, the job's last, refit over a bridge after every
    update (docs/method.md §9)."""
    ranks: int = 0
    """The rollout ranks of a ``separate`` placement; 0 when colocated."""
    max_staleness: int = 0
    """0: each step's rollouts come from the weights of the step before; 1 (``separate`` only): the rollout ranks
    generate step k + 1's while the training ranks update on step k's, with weights one update older
    (docs/method.md §9)."""
    transfer_bucket_mb: float = 256
    """``separate``: the weights go to the rollout ranks in buckets of about this many MiB (each sent once
    full, so a bucket holds up to this plus one tensor): fewer messages, at the price of one bucket's memory on the
    first training rank's device."""

    def __post_init__(self):
        if self.tp < 1 or self.n < 1 or self.max_response_length < 1:
            raise ValueError("tp, n and max_response_length must be >= 1")
        check_dtype(self.dtype)
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement={self.placement!r} must be one of {', '.join(PLACEMENTS)}")
        if (self.placement == "separate") != (self.ranks > 0) or self.ranks < 0:
            raise ValueError(
                f"ranks={self.ranks}: a separate placement needs rollout ranks (ranks >= 1), a colocated one none"
            )
        if self.max_staleness not in (0, 1):
            raise ValueError(f"max_staleness={self.max_staleness} must be 0 or 1")
        if self.max_staleness and self.placement != "separate":
            raise ValueError(
                "max_staleness=1 needs placement=separate: a colocated engine sleeps while the student trains, so "
                "its generation cannot overlap the update"
            )
        if self.transfer_bucket_mb <= 0:
            raise ValueError(f"transfer_bucket_mb={self.transfer_bucket_mb} must be > 0")

    def training_ranks(self, world: int) -> int:
        """The ranks of a ``world``-rank job that train."""
        return world - self.ranks

    def split(self, world: int, gpus_per_node: int) -> str:
        """Which ranks (and nodes) of a ``world``-rank job train and which run vLLM, in words."""
        if self.placement != "separate":
            return f"all {world} ranks train and run vLLM (colocated)"
        training = self.training_ranks(world)

        def span(first: int, last: int) -> str:
            nodes = sorted({first // gpus_per_node, last // gpus_per_node})
            where = f"node {nodes[0]}" if len(nodes) == 1 else f"nodes {nodes[0]}-{nodes[-1]}"
            return f"ranks {first}-{last} ({where})"

        return f"{span(0, training - 1)} train; {span(training, world - 1)} run vLLM (rollout.placement: separate)"


@dataclass
class DataConfig:
    """Training prompts."""

    train_files: list[str] = field(default_factory=list)
    """Parquet or jsonl files of prompts with ground-truth answers."""
    schema: str = "auto"
    """Row layout: ``verl`` (a chat ``prompt`` list and ``reward_model.ground_truth``), ``plain``
    (``problem_key``/``answer_key`` columns) or ``auto`` (decided per file from its first row)."""
    problem_key: str = "problem"
    """The problem's column in plain files."""
    answer_key: str = "answer"
    """The ground-truth answer's column in plain files."""
    response_key: str = "solution"
    """Reference responses for ``tgpo sft`` (plain layout; the verl layout's is ``target[0].content``)."""
    system_prompt: Optional[str] = LUFFY_SYSTEM_PROMPT
    """Prepended as a system message when a row has none; null or "" for no system message."""
    response_prefix: str = "<think>\n"
    """Text appended after the chat template's assistant tag; the response continues from it."""
    max_prompt_length: int = 1024
    """Prompts with more tokens are dropped (and counted in the log)."""
    shuffle: bool = True
    """Visit the prompts in a shuffled order (each epoch a new one, from ``data.seed``)."""
    seed: int = 1
    """Seed of the prompt order."""

    def __post_init__(self):
        if self.schema not in ("auto", "verl", "plain"):
            raise ValueError(f"schema={self.schema!r} must be one of auto, verl, plain")
        if self.max_prompt_length < 1:
            raise ValueError(f"max_prompt_length={self.max_prompt_length} must be >= 1")


@dataclass
class RewardConfig:
    """The math reward (docs/method.md §2.3); evaluation always uses the evaluation judge (§4)."""

    workers: int = 2
    """Processes scoring responses (each answer parsed and judged in a worker, under a timeout)."""
    timeout_s: float = 10.0
    """Per-item limit; an answer that takes longer scores 0 (reason ``timeout``)."""
    batch_deadline_s: Optional[float] = 120.0
    """Limit on scoring one step's responses (per rank): those not scored by then score 0 (reason
    ``deadline``), so a few pathological answers cannot stall the step. None: no limit."""
    any_true: bool = False
    """Training reward: also correct when the boxed grader accepts the answer (the authors train with
    math_verify alone, and use both judges only to evaluate)."""

    def __post_init__(self):
        if self.workers < 1 or self.timeout_s <= 0:
            raise ValueError("workers must be >= 1 and timeout_s > 0")
        if self.batch_deadline_s is not None and self.batch_deadline_s <= 0:
            raise ValueError(f"batch_deadline_s={self.batch_deadline_s} must be > 0 (or null: no limit)")


@dataclass
class EvalDataset:
    """One evaluation set: a prompt file, scored avg@n over n samples per problem."""

    name: str = ""
    """How the set is named in metrics (``eval/<name>/...``) and reports."""
    path: str = ""
    """Its prompt file (the training data's formats)."""
    n: int = 1
    """Samples per problem (the LUFFY protocol: 32 for AIME/AMC, 1 for MATH-500)."""
    judge: str = "math"
    """``math`` (math_verify or the boxed grader) or ``choice`` (the chosen letter, for ARC-c, GPQA, MMLU-Pro)."""
    extra_judges: list[str] = field(default_factory=list)
    """Further judges of the same responses, each reported as the set ``<name>.<judge>`` (e.g. ``[math]`` on a
    multiple-choice set: the authors scored those with their math judge, docs/method.md §4)."""
    during_training: bool = True
    """Also evaluate during training (``eval.every_n_steps``); false: only ``tgpo eval`` (large final-only sets)."""

    def __post_init__(self):
        if not self.name or not self.path:
            raise ValueError("every eval dataset needs a name and a path")
        if self.n < 1:
            raise ValueError(f"n={self.n} must be >= 1")
        for judge in (self.judge, *self.extra_judges):
            if judge not in EVAL_JUDGE_NAMES:
                raise ValueError(f"judge {judge!r} must be one of {', '.join(EVAL_JUDGE_NAMES)}")


@dataclass
class EvalConfig:
    """Validation with the LUFFY protocol (docs/method.md §4)."""

    datasets: list[EvalDataset] = field(default_factory=list)
    """The evaluation sets, each a mapping of the fields below (``eval.datasets[].*``)."""
    temperature: float = 0.6
    """Sampling temperature of evaluation (the LUFFY protocol: 0.6)."""
    top_p: float = 1.0
    """Nucleus sampling of evaluation (1.0: off)."""
    max_tokens: int = 8192
    """Response tokens at most in evaluation."""
    every_n_steps: int = 20
    """During training: evaluate every N steps (0: never)."""
    seed: int = 0
    """Seed of evaluation's samples (problem i uses ``seed + i``)."""


@dataclass(frozen=True)
class AlgorithmConfig(LossConfig):
    """Which objective, and its coefficients (the loss fields and their defaults, the paper's, are
    :class:`~tgpo_megatron.losses.LossConfig`'s: clip_eps, entropy_coeff, lambda_init, lambda_decay, ...)."""

    name: str = "tgpo_reg"
    """grpo, tgpo_reg (the paper's TGPO), tgpo_mc, tgpo_adv, tgpo_fwd_topk, rkl, kdrl, luffy or teacher_ce (the
    teacher term alone; the sequential baseline's first phase)."""
    teacher_sample_temperature: float = 1.0
    """Temperature of the teacher's sampled token for tgpo_mc."""

    def __post_init__(self):
        if self.name not in ALGORITHM_NAMES:
            raise ValueError(f"name={self.name!r} must be one of {', '.join(ALGORITHM_NAMES)}")
        super().__post_init__()


@dataclass
class TrainerConfig:
    """The loop (docs/method.md §3): steps, batch shapes, optimiser, checkpoints, logging."""

    steps: int = 300
    """Training steps (K of the paper's λ schedule is counted in these)."""
    prompts_per_step: int = 128
    """Prompts per step; each gets ``rollout.n`` rollouts."""
    mini_batches: int = 2
    """Optimizer steps per training step (PPO mini-batches; the paper: 2)."""
    ppo_epochs: int = 1
    """Passes over each mini-batch (PPO epochs)."""
    micro_batch_tokens: int = 16384
    """Token budget of one micro-batch on one rank: sequences are packed up to it (a longer one runs alone)."""
    sequence_packing: bool = True
    """Pack the sequences of a micro-batch into one row (attention kept within each sequence); false pads every
    micro-batch of a pass to one ``rows x longest`` shape instead (the reference path, which computes padding)."""
    lr: float = 1e-6
    """Adam's learning rate (after ``lr_warmup_steps``)."""
    weight_decay: float = 0.01
    """Decoupled weight decay (norms and biases have none)."""
    adam_beta1: float = 0.9
    """Adam's β1."""
    adam_beta2: float = 0.999
    """Adam's β2."""
    adam_eps: float = 1e-8
    """Adam's ε."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    lr_warmup_steps: int = 0
    """Linear learning-rate warm-up (optimizer steps); RL uses none, supervised fine-tuning usually some."""
    seed: int = 1
    """Seed of initialisation, sampling and every other random choice of the run."""
    output_dir: str = "runs/tgpo"
    """The run directory (docs/training.md: its files); running again on it resumes."""
    save_every: int = 50
    """Save a checkpoint every N steps (and at the end, on a stop request, before giving up)."""
    keep_last_n: int = 2
    """Checkpoints kept; older ones are deleted."""
    max_consecutive_skips: int = 3
    """Stop (after saving the last good state) when this many updates in a row had a non-finite loss or
    gradient."""
    export_hf: bool = True
    """At the end, write the student as an HF directory (with the tokenizer) to ``<output_dir>/hf``."""
    tensorboard: bool = True
    """Also log the metrics for TensorBoard (``<output_dir>/tensorboard``)."""
    wandb_project: Optional[str] = None
    """Also log the metrics to this Weights & Biases project (needs ``pip install wandb``)."""
    offload_teacher: bool = True
    """On GPU: keep the teacher's weights in host memory except while it runs."""

    def __post_init__(self):
        for name in (
            "steps",
            "prompts_per_step",
            "mini_batches",
            "ppo_epochs",
            "micro_batch_tokens",
            "save_every",
            "keep_last_n",
            "max_consecutive_skips",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be a positive number")
        if self.prompts_per_step % self.mini_batches:
            raise ValueError(
                f"prompts_per_step={self.prompts_per_step} must split into mini_batches={self.mini_batches}"
            )

    def learning_rate(self, step: int) -> float:
        """The learning rate of training step ``step`` (from 1): ``lr`` after a linear warm-up of
        ``lr_warmup_steps``."""
        return self.lr * min(1.0, step / max(self.lr_warmup_steps, 1))


@dataclass
class SFTConfig:
    """``tgpo sft``: cross-entropy on reference responses (to make the demo's teacher and student)."""

    swap_tokens: list[list[str]] = field(default_factory=list)
    """Pairs of single-token strings; in the *input* of a reference response each occurrence is replaced by
    its partner with probability ``swap_prob`` and not trained on, so a model learns to read both styles
    while writing only its own."""
    swap_prob: float = 0.0
    """The probability of each swap in ``swap_tokens``."""
    export_every: int = 0
    """Also export an HF copy every N steps (0: only at the end)."""

    def __post_init__(self):
        if any(len(pair) != 2 for pair in self.swap_tokens):
            raise ValueError("swap_tokens must be a list of [a, b] pairs")
        if not 0.0 <= self.swap_prob <= 1.0:
            raise ValueError(f"swap_prob={self.swap_prob} must be in [0, 1]")


@dataclass
class LaunchConfig:
    """Where a recipe runs: read by the Slurm script and the nemo-run launcher, and checked against layouts."""

    nodes: int = 1
    """Nodes of the job."""
    gpus_per_node: int = 8
    """Processes per node (one per GPU)."""
    gpu_memory_gb: float = 79.6
    """Memory of one GPU in GiB as CUDA reports it, for `tgpo plan` and the launchers' check before a job
    starts: an H100 or H800 "80 GB" has 79.6 GiB (H200: 139.8)."""

    def __post_init__(self):
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise ValueError("nodes and gpus_per_node must be >= 1")
        if self.gpu_memory_gb <= 0:
            raise ValueError(f"gpu_memory_gb={self.gpu_memory_gb} must be positive")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass
class Config:
    """The resolved recipe: one typed section per top-level key, in the order a recipe is written back."""

    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sections() -> dict[str, type]:
    """Each top-level key of a recipe and its section's type."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}
