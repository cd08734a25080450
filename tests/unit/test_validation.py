"""The checks a run passes before anything is built (tgpo_megatron.config.validation), each against the recipe
it refuses."""

from types import SimpleNamespace

import pytest

from tests.model_shapes import CONFIGS, TINY
from tgpo_megatron.config import load_config
from tgpo_megatron.config.arch import arch_from_hf_config
from tgpo_megatron.config.layouts import LayoutError
from tgpo_megatron.config.sections import ConfigError
from tgpo_megatron.config.validation import check_dataset, check_positions, check_recipe, check_rollout_tp
from tgpo_megatron.data import PromptDataset
from tgpo_megatron.errors import UserError

RECIPE = "tgpo_megatron/toy/recipes/tiny_cpu.yaml"
ARCH = arch_from_hf_config(TINY)  # 4 heads, 2 KV heads, 2 layers, 512 positions


def check(*overrides, world=2):
    check_recipe(load_config(RECIPE, list(overrides)), world, lambda path: ARCH)


def test_the_demo_recipe_passes():
    check()


@pytest.mark.parametrize(
    "overrides, world, error, message",
    [
        (["student.hf_path="], 2, UserError, r"student.hf_path is required"),
        (["student.tp=3"], 3, LayoutError, r"student layout \(student.tp=3, student.pp=1\): tp=3 does not divide"),
        (["teacher.pp=4"], 4, LayoutError, r"teacher layout .*pp=4 does not divide num_hidden_layers=2"),
        (["student.tp=2"], 3, LayoutError, r"world size 3 is not a multiple of tp\*pp=2"),
        (["rollout.tp=2", "student.tp=1"], 3, LayoutError, r"rollout.tp=2 must divide the world size 3"),
        (["rollout.tp=4", "student.tp=1"], 4, LayoutError, r"rollout.tp=4 must divide the student's .*KV heads"),
        (
            ["rollout.max_response_length=500"],
            2,
            UserError,
            r"data.max_prompt_length \+ rollout.max_response_length = \d+ exceeds .*max_position_embeddings=512",
        ),
        (["teacher.hf_path=", "algorithm.name=rkl"], 2, UserError, r"algorithm 'rkl' needs a teacher"),
        (["algorithm.name=luffy", "rollout.n=1"], 2, UserError, r"algorithm 'luffy' needs rollout.n >= 2"),
        (
            ["rollout.placement=separate", "rollout.ranks=3"],
            3,
            UserError,
            r"rollout.ranks=3 leaves no training rank in a job of 3",
        ),
        (  # the layouts count the training ranks alone
            ["rollout.placement=separate", "rollout.ranks=1", "student.tp=2"],
            2,
            LayoutError,
            r"world size 1 is not a multiple of tp\*pp=2",
        ),
    ],
)
def test_a_recipe_that_cannot_run_is_refused_naming_the_field(overrides, world, error, message):
    with pytest.raises(error, match=message):
        check(*overrides, world=world)


def test_a_mixture_of_experts_student_with_tensor_parallelism_needs_sequence_parallelism():
    """Megatron's MoE layer raises at the first training forward otherwise, after every model is built."""
    moe = arch_from_hf_config(CONFIGS["Qwen3-30B-A3B-Thinking-2507-aligned"])
    recipe = load_config(RECIPE, ["student.tp=2"])
    with pytest.raises(
        LayoutError,
        match=r"student layout \(student.tp=2\): a mixture-of-experts student .* "
        r"needs student.sequence_parallel=true",
    ):
        check_recipe(recipe, 2, lambda path: moe)
    check_recipe(load_config(RECIPE, ["student.tp=1", "student.ep=2"]), 2, lambda path: moe)
    te_sp = ["student.transformer_impl=transformer_engine", "student.sequence_parallel=true"]
    check_recipe(load_config(RECIPE, ["student.tp=2", *te_sp]), 2, lambda path: moe)


def test_grpo_runs_without_a_teacher():
    check("teacher.hf_path=", "algorithm.name=grpo")


def test_the_engine_checks_are_the_recipe_checks():
    """What vLLM and the evaluation tools check on any checkpoint directory raises the same errors."""
    with pytest.raises(LayoutError, match=r"rollout.tp=3 must divide the world size 4"):
        check_rollout_tp(3, 4, ARCH)
    with pytest.raises(UserError, match=r"prompts = 600 exceeds the model's max_position_embeddings=512"):
        check_positions(600, ARCH, "prompts")


def test_an_off_policy_algorithm_needs_a_trace_in_every_row():
    examples = [
        SimpleNamespace(source="train.jsonl:1", target="4"),
        SimpleNamespace(source="train.jsonl:2", target=" "),
    ]
    dataset = PromptDataset(examples)
    check_dataset(load_config(RECIPE, ["algorithm.name=tgpo_reg"]), dataset)  # not read without traces
    with pytest.raises(UserError, match=r"algorithm 'luffy' .* 1 of 2 rows have none: train.jsonl:2"):
        check_dataset(load_config(RECIPE, ["algorithm.name=luffy"]), dataset)


def test_a_separate_placement_splits_the_job_between_training_and_rollout_ranks():
    check("rollout.placement=separate", "rollout.ranks=1", "student.tp=2", world=3)
    check("rollout.placement=separate", "rollout.ranks=2", "rollout.tp=2", "student.tp=2", world=4)
    with pytest.raises(ConfigError, match=r"rollout: ranks=0: a separate placement needs rollout ranks"):
        load_config(RECIPE, ["rollout.placement=separate"])
    with pytest.raises(ConfigError, match=r"rollout: placement='split' must be one of colocated, separate"):
        load_config(RECIPE, ["rollout.placement=split"])


def test_one_step_of_staleness_needs_the_rollout_ranks_of_a_separate_placement():
    separate = ["rollout.placement=separate", "rollout.ranks=1"]
    assert load_config(RECIPE, [*separate, "rollout.max_staleness=1"]).rollout.max_staleness == 1
    with pytest.raises(ConfigError, match=r"rollout: max_staleness=1 needs placement=separate"):
        load_config(RECIPE, ["rollout.max_staleness=1"])
    with pytest.raises(ConfigError, match=r"rollout: max_staleness=2 must be 0 or 1"):
        load_config(RECIPE, [*separate, "rollout.max_staleness=2"])
    with pytest.raises(ConfigError, match=r"rollout: transfer_bucket_mb=0.0 must be > 0"):
        load_config(RECIPE, [*separate, "rollout.transfer_bucket_mb=0"])
