"""Whether a run can start, checked before anything is built: the one home of every check that spans fields,
files or models (a single field's range is its dataclass's ``__post_init__``).

``check_recipe`` needs only the recipe and the models' ``config.json`` (no torch, no tokenizer): the trainer
runs it against the real world size, ``tgpo plan`` and the launchers against the GPUs a recipe states, the
recipe tests against the models' published shapes. ``check_tokenizers`` and ``check_dataset`` follow once the
trainer has loaded those. The rollout engine and the evaluation tools, which start from any checkpoint
directory, call the same ``check_rollout_tp`` and ``check_positions``. Imports without torch.
"""

from __future__ import annotations

from typing import Callable

from tgpo_megatron.config import Config
from tgpo_megatron.config.arch import ModelArch, load_arch
from tgpo_megatron.config.layouts import LayoutError
from tgpo_megatron.errors import UserError
from tgpo_megatron.losses.registry import ALGORITHMS

ALIGN_HINT = "make them share one id space with tools/align_tokenizer.py"


def check_recipe(config: Config, world: int, arch_of: Callable[[str], ModelArch] = load_arch) -> None:
    """Every layout against the job's ``world`` size (its training ranks) and its model's shape; the rollout
    engine's against its ranks; the algorithm against the models given."""
    if not config.student.hf_path:
        raise UserError("student.hf_path is required")
    engine_ranks = config.rollout.ranks or world
    world = config.rollout.training_ranks(world)
    if world < 1:
        raise UserError(f"rollout.ranks={config.rollout.ranks} leaves no training rank in a job of {engine_ranks}")
    for name, model in (("student", config.student), ("teacher", config.teacher)):
        if model.hf_path:
            try:
                model.layout.validate_for(arch_of(model.hf_path), world)
            except LayoutError as e:
                ep = f", {name}.ep={model.ep}" if model.ep > 1 else ""
                raise LayoutError(f"{name} layout ({name}.tp={model.tp}, {name}.pp={model.pp}{ep}): {e}") from None
    arch = arch_of(config.student.hf_path)
    student = config.student
    if arch.moe is not None and student.tp > 1 and not student.sequence_parallel:
        # Megatron's MoE layer refuses it at the first training forward (moe_layer.py), after everything is built
        raise LayoutError(
            f"student layout (student.tp={student.tp}): a mixture-of-experts student with tensor parallelism "
            "needs student.sequence_parallel=true (Transformer Engine spec); or set student.tp=1 and spread the "
            "experts with student.ep"
        )
    check_rollout_tp(config.rollout.tp, engine_ranks, arch)
    check_positions(
        config.data.max_prompt_length + config.rollout.max_response_length,
        arch,
        "data.max_prompt_length + rollout.max_response_length",
    )
    check_algorithm(config)


def check_algorithm(config: Config) -> None:
    """The algorithm against what the recipe gives it: a teacher, rollouts per prompt, a correction."""
    algorithm = ALGORITHMS[config.algorithm.name]
    if algorithm.uses_teacher and not config.teacher.hf_path:
        raise UserError(f"algorithm {config.algorithm.name!r} needs a teacher: set teacher.hf_path")
    if algorithm.off_policy_traces and config.rollout.n <= algorithm.off_policy_traces:
        raise UserError(f"algorithm {config.algorithm.name!r} needs rollout.n >= 2 (one slot is the trace)")
    if config.rollout.correction.enabled and not algorithm.policy_gradient:
        raise UserError(
            f"rollout.correction.mode={config.rollout.correction.mode!r}: algorithm {config.algorithm.name!r} has "
            "no policy-gradient term to correct; set rollout.correction.mode=none"
        )


def check_rollout_tp(tp: int, world: int, arch: ModelArch) -> None:
    """vLLM's replicas are groups of ``tp`` consecutive ranks, each splitting the attention heads ``tp`` ways."""
    if tp < 1 or world % tp:
        raise LayoutError(f"rollout.tp={tp} must divide the world size {world}")
    if arch.num_attention_heads % tp or arch.num_kv_heads % tp:
        raise LayoutError(
            f"rollout.tp={tp} must divide the student's attention and KV heads "
            f"({arch.num_attention_heads}, {arch.num_kv_heads})"
        )


def check_positions(length: int, arch: ModelArch, what: str) -> None:
    """A prompt and its response must fit the model's position table."""
    if length > arch.max_position_embeddings:
        raise UserError(
            f"{what} = {length} exceeds the model's max_position_embeddings={arch.max_position_embeddings}; "
            "shorten data.max_prompt_length or the response length"
        )


def check_tokenizers(
    student_tokenizer, teacher_tokenizer, student_arch, teacher_arch, decoder, accepted_collisions=()
) -> None:
    """Refuse a teacher whose token ids mean different text from the student's: model vocabulary sizes, EOS, a
    sample of the shared ids (less the collisions the run accepted), and the teacher-only added tokens, which the
    student's decoder must know (``align_tokenizer`` records them)."""
    problems = []
    if student_arch.vocab_size != teacher_arch.vocab_size:
        problems.append(f"vocab_size {student_arch.vocab_size} (student) vs {teacher_arch.vocab_size} (teacher)")
    if student_tokenizer.eos_token_id != teacher_tokenizer.eos_token_id:
        problems.append(f"EOS id {student_tokenizer.eos_token_id} vs {teacher_tokenizer.eos_token_id}")
    n = min(len(student_tokenizer), len(teacher_tokenizer))
    accepted = {i for i, _, _ in accepted_collisions}
    sample = sorted(set(range(0, n, max(1, n // 997))) | set(student_tokenizer.added_tokens_decoder))
    sample = [i for i in sample if i < n and i not in accepted]
    s_tokens = student_tokenizer.convert_ids_to_tokens(sample)
    t_tokens = teacher_tokenizer.convert_ids_to_tokens(sample)
    differing = [(i, a, b) for i, a, b in zip(sample, s_tokens, t_tokens) if a != b]
    if differing:
        i, a, b = differing[0]
        problems.append(f"{len(differing)} of {len(sample)} sampled ids decode differently (id {i}: {a!r} vs {b!r})")
    unknown = {
        i: t.content
        for i, t in teacher_tokenizer.added_tokens_decoder.items()
        if i >= len(student_tokenizer) and decoder.teacher_only.get(i) != t.content
    }
    if unknown:
        problems.append(
            f"the student cannot decode the teacher-only tokens {unknown} (the student's align_report.json "
            "does not list them)"
        )
    if problems:
        raise UserError(
            f"the teacher's token ids do not mean the student's tokens: {'; '.join(problems)}. "
            f"TGPO passes the teacher's argmax ids to the student; {ALIGN_HINT}"
        )


def check_dataset(config: Config, dataset) -> None:
    """An algorithm that learns from the rows' off-policy traces needs one in every row."""
    if not ALGORITHMS[config.algorithm.name].off_policy_traces:
        return
    missing = [e.source for e in dataset.examples if not e.target.strip()]
    if missing:
        raise UserError(
            f"algorithm {config.algorithm.name!r} replaces one rollout per prompt with the row's "
            f"off-policy trace (verl 'target', or the data.response_key column), and {len(missing)} "
            f"of {len(dataset)} rows have none: {', '.join(missing[:5])}"
        )
