"""``tgpo plan``: the memory each GPU needs in each phase of a training step, before anything is built.

    tgpo plan --config examples/recipes/qwen2.5_math_7b_tgpo.yaml [--gpu-memory-gb 80] [overrides]

From the recipe's layouts and batch settings and the models' ``config.json`` (no torch, no GPU), per GPU:
- the student's state, resident all step: weights, the fp32 gradient buffer, the distributed optimizer's
  shard (fp32 main copy and Adam m, v, split over data parallelism);
- what each phase adds: vLLM's share while it generates, its weights alone while it refits; the teacher's
  weights, activations and
  logits while it runs; the student's forward, and its forward/backward with the activations of one packed
  micro-batch of ``trainer.micro_batch_tokens`` (with and without activation recompute) and the loss head;
- a fixed reserve for the CUDA context, NCCL's buffers and allocator fragmentation;
- host memory per node (the offloaded teacher).

The peak over phases must fit the GPU; if it does not, ``tgpo plan`` exits 1 naming the phase and the
smallest change that fits. The arithmetic of each part is ``config.memory``'s. Estimates, not measurements:
see docs/scaling.md.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

from tgpo_megatron.cli import command_parser
from tgpo_megatron.config import Config
from tgpo_megatron.config.arch import ModelArch
from tgpo_megatron.config.memory import (
    GIB,
    bytes_of,
    forward_only_peak,
    kv_bytes_per_token,
    largest_tensor,
    refit_gather_peak,
    stage_parameters,
    student_activations,
    student_state,
)
from tgpo_megatron.config.validation import check_recipe
from tgpo_megatron.errors import EXIT_BAD_INPUT, UserError

RESERVE_GIB = 3.0
"""CUDA context (~0.5 GiB), NCCL communicators of three layouts (~1-2 GiB) and allocator slack."""
VLLM_OVERHEAD_GIB = 2.0
"""vLLM's own activations, sampler buffers and CUDA graphs besides its weights and KV cache."""
VLLM_GRAPHS_GIB = 1.0
"""vLLM's captured CUDA graphs (an estimate): part of its share while it generates, and kept while it sleeps
(sleep mode frees only its weights and KV cache), so counted in every other phase too; none with
``rollout.enforce_eager``."""


# -- the plan ------------------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    parts: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.parts.values())


@dataclass
class Plan:
    gpu_bytes: float
    phases: list[Phase]
    notes: list[str] = field(default_factory=list)
    host_per_node: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """Reasons the recipe cannot run, besides the peak (e.g. a KV cache that cannot hold one sequence)."""
    max_gpu_memory_utilization: float = 0.0
    """The largest ``rollout.gpu_memory_utilization`` that is free beside the student when vLLM starts."""
    kv_tokens: float = 0.0
    """The tokens vLLM's KV cache holds per replica."""

    @property
    def peak(self) -> Phase:
        return max(self.phases, key=lambda p: p.total)

    @property
    def fits(self) -> bool:
        return self.peak.total <= self.gpu_bytes and not self.problems


def make_plan(config: Config, arch_of: Callable[[str], ModelArch]) -> Plan:
    """The per-GPU memory of each phase of a step of ``config`` on its GPUs (``launch.gpu_memory_gb``)."""
    check_recipe(config, config.launch.world_size, arch_of)
    gpu = config.launch.gpu_memory_gb * GIB
    trainer, rollout, s_cfg, t_cfg = config.trainer, config.rollout, config.student, config.teacher
    student, s_bytes = arch_of(s_cfg.hf_path), bytes_of(s_cfg.dtype)
    separate = rollout.placement == "separate"
    dp = rollout.training_ranks(config.launch.world_size) // (s_cfg.tp * s_cfg.pp)
    state = student_state(student, s_cfg.tp, s_cfg.pp, dp, s_bytes, s_cfg.ep)
    resident = {
        "student weights": state.weights,
        "student gradients": state.gradients,
        "optimizer shard": state.optimizer,
        "reserve": RESERVE_GIB * GIB,
    }
    plan = Plan(gpu, [])

    # vLLM takes gpu_memory_utilization of the whole GPU, which must be free when it starts: beside the student
    # when colocated, on a GPU of its own when separate
    v_bytes = bytes_of(rollout.dtype)
    vllm_weights = sum(stage_parameters(student, 1, 1, 0)) * v_bytes / rollout.tp
    vllm_pool = rollout.gpu_memory_utilization * gpu
    # separate: the weights arrive in buckets of about transfer_bucket_mb (each sent once full), which the
    # rollout ranks receive beside vLLM's pool and the first training rank copies its bucket into
    # (a bucket is sent once it holds transfer_bucket_mb, so at most that less a byte plus the tensor that filled it)
    bucket = rollout.transfer_bucket_mb * 2**20 + largest_tensor(student) * s_bytes if separate else 0.0
    free_for_vllm = max(gpu - (bucket if separate else state.total) - RESERVE_GIB * GIB, 0.0)
    plan.max_gpu_memory_utilization = math.floor(free_for_vllm / gpu * 100) / 100
    kv = rollout.kv_cache_gb * GIB if rollout.kv_cache_gb else vllm_pool - vllm_weights - VLLM_OVERHEAD_GIB * GIB
    kv_tokens = plan.kv_tokens = max(kv, 0.0) / kv_bytes_per_token(student, rollout.tp, v_bytes)
    max_len = config.data.max_prompt_length + rollout.max_response_length
    plan.notes.append(
        f"vLLM at TP{rollout.tp}: weights {vllm_weights / GIB:.1f} GiB, KV cache {kv / GIB:.1f} GiB = "
        f"{kv_tokens / 1e3:.0f}k tokens per replica ({kv_tokens / max_len:.1f} sequences of "
        f"{max_len} tokens at once); rollout.gpu_memory_utilization at most "
        f"{plan.max_gpu_memory_utilization:.2f} (recipe: {rollout.gpu_memory_utilization})"
    )
    if vllm_pool > free_for_vllm:
        room = (
            f"set at most {plan.max_gpu_memory_utilization:.2f}"
            if plan.max_gpu_memory_utilization > 0
            else "the student's state leaves no room for vLLM"
        )
        plan.problems.append(
            f"generate: rollout.gpu_memory_utilization={rollout.gpu_memory_utilization} asks vLLM "
            f"for {vllm_pool / GIB:.1f} GiB when it starts, but {free_for_vllm / GIB:.1f} GiB is free "
            f"beside the student ({room})"
        )
    elif kv_tokens < max_len:
        plan.problems.append(
            f"generate: vLLM's KV cache ({max(kv, 0) / GIB:.1f} GiB) cannot hold one sequence of {max_len} tokens"
        )
    if separate:  # the rollout ranks hold vLLM alone; the training ranks never hold any of it
        plan.notes.append(rollout.split(config.launch.world_size, config.launch.gpus_per_node))
        plan.phases.append(
            Phase(
                "generate (rollout ranks)",
                {
                    "vLLM (weights, KV cache, buffers)": vllm_pool,
                    "reserve": RESERVE_GIB * GIB,
                    "weight bucket (at the refit)": bucket,
                },
            )
        )
    else:
        plan.phases.append(Phase("generate", {**resident, "vLLM (weights, KV cache, buffers)": vllm_pool}))
    if not rollout.enforce_eager and not separate:
        resident["vLLM CUDA graphs (asleep)"] = VLLM_GRAPHS_GIB * GIB
    # the engine sleeps as soon as it is built, so the first refit is every refit: vLLM's weights wake alone
    # (the KV cache after them) and the student's tensors are gathered one at a time
    gathered = {"gathered tensor": refit_gather_peak(student, s_cfg.tp, s_bytes)}
    if separate:  # the bucket's tensors, held until it is full, and its copy sent over the bridge
        gathered["weight bucket (first training rank)"] = 2 * bucket
    plan.phases.append(Phase("refit", {**resident, **({} if separate else {"vLLM weights": vllm_weights}), **gathered}))

    tokens = max(trainer.micro_batch_tokens, max_len)  # a longer sequence runs alone, over the budget
    chunk = config.algorithm.chunk_tokens
    if t_cfg.hf_path:
        teacher, t_bytes = arch_of(t_cfg.hf_path), bytes_of(t_cfg.dtype)
        t_weights = (
            max(sum(stage_parameters(teacher, t_cfg.tp, t_cfg.pp, s, t_cfg.ep)) for s in range(t_cfg.pp)) * t_bytes
        )
        plan.phases.append(
            Phase(
                "teacher forward",
                {
                    **resident,
                    "teacher weights": t_weights,
                    "activations and logits": forward_only_peak(teacher, tokens, t_cfg.tp, t_bytes, chunk),
                },
            )
        )
        if trainer.offload_teacher:  # page-locked at their exact size (teacher.page_lock)
            plan.host_per_node["teacher weights between uses"] = t_weights * config.launch.gpus_per_node
    plan.phases.append(
        Phase(
            "student forward",
            {**resident, "activations and logits": forward_only_peak(student, tokens, s_cfg.tp, s_bytes, chunk)},
        )
    )
    micro_batches = max(1, math.ceil(_mean_mini_batch_tokens(config) / dp / tokens))
    acts = {
        r: student_activations(
            student, tokens, s_cfg.tp, s_cfg.pp, s_bytes, r, micro_batches, s_cfg.sequence_parallel, chunk
        )
        for r in ("none", "full")
    }
    chosen = acts[s_cfg.recompute]
    plan.phases.append(
        Phase(
            "student train",
            {
                **resident,
                "layer activations": chosen.layers,
                "logits": chosen.logits,
                "backward transients": chosen.backward,
            },
        )
    )
    plan.notes.append(
        f"student train, one micro-batch of {tokens} tokens: activations {acts['none'].total / GIB:.1f} "
        f"GiB without recompute, {acts['full'].total / GIB:.1f} GiB with student.recompute=full "
        f"(recipe: {s_cfg.recompute})"
    )
    return plan


def _mean_mini_batch_tokens(config: Config) -> float:
    """Tokens of a mini-batch with prompts at their limit and responses at half theirs (for the pipeline's
    in-flight micro-batches only)."""
    per_rollout = config.data.max_prompt_length + config.rollout.max_response_length / 2
    return config.trainer.prompts_per_step // config.trainer.mini_batches * config.rollout.n * per_rollout


# -- what to change ------------------------------------------------------------------------------------------


def _candidates(config: Config, arch_of) -> list[str]:
    """Changes of layout or batch to try, cheapest first, as dotted overrides."""
    s, t = config.student, config.teacher
    max_len = config.data.max_prompt_length + config.rollout.max_response_length
    out = []
    budget = config.trainer.micro_batch_tokens
    while budget // 2 >= max_len:
        budget //= 2
        out.append(f"trainer.micro_batch_tokens={budget}")
    if s.tp > 1 and s.transformer_impl == "transformer_engine" and not s.sequence_parallel:
        out.append("student.sequence_parallel=true")
    if s.recompute == "none":
        out.append("student.recompute=full")
    student = arch_of(s.hf_path)
    out += [f"student.tp={tp}" for tp in (2 * s.tp, 4 * s.tp, 8 * s.tp) if student.num_kv_heads % tp == 0]
    out += [f"student.pp={pp}" for pp in (2 * s.pp, 4 * s.pp) if student.num_layers % pp == 0]
    if t.hf_path:
        teacher = arch_of(t.hf_path)
        out += [f"teacher.tp={tp}" for tp in (2 * t.tp, 4 * t.tp) if teacher.num_kv_heads % tp == 0]
        if teacher.moe is not None:
            out += [
                f"teacher.ep={ep}"
                for ep in (2 * t.ep, 4 * t.ep, 8 * t.ep)
                if teacher.moe.num_experts % ep == 0 and config.launch.world_size % (ep * t.pp) == 0
            ]
    return out


def suggest(config: Config, arch_of) -> Optional[str]:
    """The cheapest change after which the recipe fits: none, one or two changes of layout or batch (cheapest
    first), each followed, if vLLM then asks for more than is free, by the largest share that is."""
    from tgpo_megatron.config import apply_overrides, config_from_dict

    def plan_with(change: tuple[str, ...]) -> Optional[Plan]:
        try:
            return make_plan(config_from_dict(apply_overrides(config.to_dict(), list(change))), arch_of)
        except UserError:  # a layout the world or the model cannot take
            return None

    single = _candidates(config, arch_of)
    pairs = [(a, b) for i, a in enumerate(single) for b in single[i + 1 :] if a.split("=")[0] != b.split("=")[0]]
    for change in [()] + [(c,) for c in single] + pairs:
        plan = plan_with(change)
        if plan is None:
            continue
        share = plan.max_gpu_memory_utilization
        if not plan.fits and share > 0:
            change = (*change, f"rollout.gpu_memory_utilization={share:.2f}")
            plan = plan_with(change)
        if change and plan is not None and plan.fits:
            return " ".join(change)
    return None


# -- the command ---------------------------------------------------------------------------------------------


def render(plan: Plan) -> str:
    names = list(dict.fromkeys(k for p in plan.phases for k in p.parts))
    lines = ["| GiB per GPU | " + " | ".join(p.name for p in plan.phases) + " |", "|---|" + "---|" * len(plan.phases)]
    for name in names:
        cells = [f"{p.parts[name] / GIB:.1f}" if name in p.parts else "" for p in plan.phases]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"**{p.total / GIB:.1f}**" for p in plan.phases) + " |")
    peak = plan.peak
    lines.append("")
    lines.append(
        f"peak: {peak.name}, {peak.total / GIB:.1f} of {plan.gpu_bytes / GIB:.1f} GiB "
        f"({'fits' if peak.total <= plan.gpu_bytes else 'does not fit'})"
    )
    lines += [f"- {note}" for note in plan.notes]
    lines += [f"- host memory per node: {name} {value / GIB:.0f} GiB" for name, value in plan.host_per_node.items()]
    return "\n".join(lines)


class DoesNotFit(UserError):
    """The recipe's peak phase (or vLLM's start-up) needs more memory than its GPUs have."""


def check_fits(config: Config, arch_of: Optional[Callable[[str], ModelArch]] = None) -> Plan:
    """The plan of ``config``, or ``DoesNotFit`` naming the phase and the cheapest change that fits."""
    if arch_of is None:
        from tgpo_megatron.config.arch import load_arch as arch_of
    plan = make_plan(config, arch_of)
    if plan.fits:
        return plan
    peak = plan.peak
    reasons = plan.problems + (
        [f"{peak.name}: needs {peak.total / GIB:.1f} GiB per GPU, the GPU has {plan.gpu_bytes / GIB:.1f} GiB"]
        if peak.total > plan.gpu_bytes
        else []
    )
    change = suggest(config, arch_of)
    hint = f"; it fits with {change}" if change else "; no change of one or two settings makes it fit"
    raise DoesNotFit(f"the recipe does not fit its GPUs: {'; '.join(reasons)}{hint} (tgpo plan prints the table)")


def shapes_for(recipe: str, notes: list[str]) -> Callable[[str], ModelArch]:
    """``load_arch``, except that a model directory with no ``config.json`` here (a cluster path such as
    ``/models/...`` on a laptop) is read from the recipe's ``../model_configs/<name>`` (the published shapes the
    repository ships, examples/model_configs), with a line added to ``notes`` saying so."""
    from tgpo_megatron.config.arch import load_arch

    shipped = os.path.join(os.path.dirname(os.path.abspath(recipe)), os.pardir, "model_configs")

    def arch_of(path: str) -> ModelArch:
        stand_in = os.path.normpath(os.path.join(shipped, os.path.basename(path.rstrip("/"))))
        if os.path.exists(os.path.join(path, "config.json")) or not os.path.isfile(
            os.path.join(stand_in, "config.json")
        ):
            return load_arch(path)
        note = f"{path} has no config.json here: planned with the shapes of {os.path.relpath(stand_in)}"
        if note not in notes:
            notes.append(note)
        return load_arch(stand_in)

    return arch_of


def main(argv=None) -> int:
    from tgpo_megatron.config import load_config

    p = command_parser("tgpo plan", __doc__)
    p.add_argument("--config", required=True, help="recipe YAML")
    p.add_argument(
        "--gpu-memory-gb",
        type=float,
        default=None,
        help="GiB per GPU as CUDA reports it (default: the recipe's launch.gpu_memory_gb; an H100 80GB has 79.6)",
    )
    p.add_argument(
        "--recipe-only",
        action="store_true",
        help="only check the recipe (keys, types, values), not the memory (exit 2 if it is wrong)",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.micro_batch_tokens=8192")
    args = p.parse_args(argv)
    gpu = [f"launch.gpu_memory_gb={args.gpu_memory_gb}"] if args.gpu_memory_gb else []
    try:
        config = load_config(args.config, args.overrides + gpu)
        if args.recipe_only:
            print(f"{args.config}: the recipe is valid", flush=True)
            return 0
        notes: list[str] = []
        arch_of = shapes_for(args.config, notes)
        plan = make_plan(config, arch_of)
        plan.notes += notes
        print(render(plan), flush=True)
        check_fits(config, arch_of)
    except DoesNotFit as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
