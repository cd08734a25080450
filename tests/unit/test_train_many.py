"""`tgpo train-many`: what it refuses before any run trains, and which runs it skips (the equality of a shared
launch with separate ones is tests/e2e/test_train.py)."""

import json

import pytest

from tgpo_megatron.config import load_config
from tgpo_megatron.data.tokenizer import load_tokenizer
from tgpo_megatron.errors import UserError
from tgpo_megatron.models.tiny import save_char_model
from tgpo_megatron.services import Services
from tgpo_megatron.train_many import finished, read_runs

RECIPE = "tgpo_megatron/toy/recipes/tiny_cpu.yaml"


def write_runs(tmp_path, runs) -> str:
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(runs))
    return str(path)


def test_every_run_is_loaded_before_any_trains(tmp_path):
    runs = [{"config": RECIPE, "overrides": [f"trainer.output_dir={tmp_path / name}"]} for name in ("a", "b")]
    assert [c.trainer.output_dir for c in read_runs(write_runs(tmp_path, runs))] == [
        str(tmp_path / "a"),
        str(tmp_path / "b"),
    ]


@pytest.mark.parametrize(
    "runs, message",
    [
        ([], r"expected a non-empty list of runs"),
        ([{"recipe": RECIPE}], r"run 0 must be \{'config': RECIPE, 'overrides': \[...\]\}"),
        (
            [
                {"config": RECIPE, "overrides": ["trainer.output_dir=x"]},
                {"config": RECIPE, "overrides": ["trainer.stpes=3"]},
            ],
            r"run 1: .*trainer.stpes",
        ),
        ([{"config": RECIPE}, {"config": RECIPE}], r"runs share an output directory: runs/demo/tiny_cpu"),
    ],
)
def test_a_bad_runs_file_is_refused_naming_the_run(tmp_path, runs, message):
    with pytest.raises(UserError, match=message):
        read_runs(write_runs(tmp_path, runs))


def test_a_runs_file_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "runs.json"
    path.write_text("[{config: x}")
    with pytest.raises(UserError, match=r"runs.json: not valid JSON"):
        read_runs(str(path))


def test_only_a_run_that_recorded_success_is_skipped(tmp_path):
    assert not finished(str(tmp_path))
    for code, done in (("75\n", False), ("0\n", True)):
        (tmp_path / "exit_code").write_text(code)
        assert finished(str(tmp_path)) is done


def test_a_run_needing_other_engine_settings_is_refused(tmp_path):
    """vLLM cannot start twice in one process: the second run must fit the first run's engine."""
    model = str(tmp_path / "student")
    save_char_model(model)
    tokenizer = load_tokenizer(model)
    first = load_config(RECIPE, [f"student.hf_path={model}"])
    services = Services()
    services.engine = engine = object()  # what the first run started
    services.engine_settings = services.settings_of(first, tokenizer)
    for same in ("trainer.seed=5", "rollout.correction.mode=tis", "rollout.temperature=0.7"):  # the trainer's
        assert services.engine_for(load_config(RECIPE, [f"student.hf_path={model}", same]), tokenizer) is engine
    other = load_config(RECIPE, [f"student.hf_path={model}", "rollout.max_response_length=32", "rollout.kv_cache_gb=3"])
    with pytest.raises(UserError, match=r"this run's max_model_len, rollout.kv_cache_gb differ from the first run's"):
        services.engine_for(other, tokenizer)
