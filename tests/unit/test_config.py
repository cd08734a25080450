"""Recipes: inheritance, dotted overrides, and errors that name the key."""

import pytest

from tgpo_megatron.config import ConfigError, load_config, save_config


def write(path, text):
    path.write_text(text)
    return str(path)


def test_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "data:\n  max_prompt_length: 64\n  train_files: [a.jsonl]\nreward:\n  timeout_s: 3\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\ndata:\n  seed: 9\n")
    cfg = load_config(
        child,
        [
            "reward.any_true=true",
            "eval.temperature=1",
            "data.system_prompt=null",
            "trainer.lr=1e-6",
            "eval.datasets=[{name: aime, path: a.parquet, n: 32}]",
        ],
    )
    assert cfg.data.max_prompt_length == 64 and cfg.data.seed == 9 and cfg.data.train_files == ["a.jsonl"]
    assert cfg.reward.timeout_s == 3.0 and isinstance(cfg.reward.timeout_s, float)
    assert cfg.reward.any_true is True and cfg.data.system_prompt is None
    assert cfg.eval.temperature == 1.0 and cfg.eval.datasets[0].n == 32
    assert cfg.trainer.lr == 1e-6  # YAML 1.1 reads `1e-6` as text; a float field takes it as the number
    save_config(cfg, str(tmp_path / "resolved.yaml"))
    again = load_config(str(tmp_path / "resolved.yaml"))
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "data.max_promt_length=5",
            r"unknown config key 'data.max_promt_length' \(did you mean data.max_prompt_length\?\)",
        ),
        ("dta.seed=1", r"unknown config section 'dta' \(did you mean data\?\)"),
        ("data.seed=abc", r"data.seed: expected int, got 'abc'"),
        ("data.seed=true", r"data.seed: expected int, got True"),
        ("trainer.lr=fast", r"trainer.lr: expected float, got 'fast'"),
        ("data.train_files=x.jsonl", r"data.train_files: expected a list"),
        ("data.schema=csv", r"data: schema='csv' must be one of"),
        ("eval.datasets=[{name: a, path: b, n: 0}]", r"eval.datasets\[0\]: n=0 must be >= 1"),
        ("data.seed", r"not of the form section.key=value"),
        ("student.recompute=selective", r"student: recompute='selective' must be none or full"),
        ("student.sequence_parallel=true", r"student: sequence_parallel needs tp > 1 and transformer_impl"),
        ("teacher.pp=0", r"teacher: parallel sizes must be >= 1, got tp=1 pp=0 ep=1"),  # the Layout's own check
        ("rollout.dtype=float16", r"rollout: dtype='float16' must be one of auto, bfloat16, float32"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_recipe_files(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(str(tmp_path / "nope.yaml"))
    loop = write(tmp_path / "loop.yaml", "base: loop.yaml\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config(loop)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path / "bad.yaml", "data: [\n"))


def test_the_learning_rate_warms_up_linearly_then_stays():
    """The one schedule `tgpo train` and `tgpo sft` both set (by hand: lr 3e-4 over 100 warm-up steps)."""
    from tgpo_megatron.config import TrainerConfig

    warm = TrainerConfig(lr=3e-4, lr_warmup_steps=100)
    assert [warm.learning_rate(s) for s in (1, 50, 100, 101, 500)] == pytest.approx([3e-6, 1.5e-4, 3e-4, 3e-4, 3e-4])
    assert TrainerConfig(lr=1e-6).learning_rate(1) == 1e-6  # RL: no warm-up
