"""`tgpo demo --quick`: every stage completes and leaves its files; the exported student works in transformers;
then the README's commands run as a user types them, on the demo's outputs.

The quick demo's step counts are far too small to learn anything; the full demo's numbers are in docs/demo.md.
"""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.e2e.conftest import run_cli
from tgpo_megatron.toy import stages

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NEEDS_A_CLUSTER = (  # README commands this machine cannot run, each for a reason
    "make demo",  # the demo itself, quick here
    "make test",  # this suite
    'pip install -e ".[gpu]"',  # the GPU stack (resolved by tests/integration/test_install.py)
    "bash slurm/build_image.sh",  # needs enroot (shellcheck-clean: tests/integration/test_launch.py)
    "RUN_DIR=",  # sbatch (the scripts run against a stand-in srun: tests/integration/test_launch.py)
    "sbatch ",
    "make launch-env",  # made by `make test`
    ".venv-launch/bin/python examples/launch_nemo_run.py",  # Slurm (dry runs: tests/integration/test_launch.py)
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The quick demo, written where examples/recipes/tiny_cpu.yaml expects it (runs/demo under the working
    directory), and its output."""
    work = tmp_path_factory.mktemp("user")
    run = run_cli("-m", "tgpo_megatron.cli", "demo", "--quick", "--out", work / "runs" / "demo", timeout=900)
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-2000:]
    return work, run


def readme_commands() -> list[str]:
    """Each command of the README's bash blocks, continuation lines joined, comments dropped."""
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), flags=re.S)
    commands = []
    for block in blocks:
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = re.sub(r"\s+#.*$", "", command).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def test_quick_demo_runs_every_stage(demo):
    """One seed of the study's large-gap cell: only the models it uses, the recipe's λ, curves from step 0."""
    work, run = demo
    out = work / "runs" / "demo"
    for stage in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert stage in run.stdout
    runs = ("grpo/none/seed1", "rkl/strong_large/seed1", "tgpo_reg/strong_large/seed1")
    for path in (
        "data/train.parquet",
        "data/add3_carry.parquet",
        "data/add3_nocarry.parquet",
        "models/teacher/model.safetensors",  # where examples/recipes/tiny_cpu.yaml reads them
        "models/student/model.safetensors",
        *(f"rl/{name}/metrics.jsonl" for name in runs),
        "results.md",
        "results.json",
        "demo.png",
        "best_student_hf/config.json",
    ):
        assert (out / path).exists(), path
    assert sorted(os.listdir(out / "sft")) == ["strong_comma", "student_c0.0200_s1"]  # no unused model
    results = json.loads((out / "results.json").read_text())
    student = results["models"]["student_s1"]
    assert set(results["models"]) == {"strong_comma", "student_s1"} and results["best"] in runs
    with open(stages.RECIPE) as f:
        recipe_lambda = yaml.safe_load(f)["algorithm"]["lambda_init"]
    for name in runs:  # every accuracy curve starts at the student's, every run with the recipe's λ
        curve = results["results"]["{}@{}".format(*name.split("/")[:2])]["1"]
        assert list(curve["accuracy"]) == ["0", "1", "2"], name
        for test_set in ("add3_carry", "add3_nocarry"):
            assert curve[test_set]["0"] == student["test_accuracy"][test_set], name
        config = yaml.safe_load((out / "rl" / name / "config.yaml").read_text())
        assert config["algorithm"]["lambda_init"] == recipe_lambda, name
    assert "| tgpo_reg@strong_large |" in (out / "results.md").read_text()

    # the exported student loads in transformers (with its own tokenizer, as training reads it) and generates
    # from the task's prompt; the quick demo trains too little for the answer to be right, or even non-empty
    import torch
    from transformers import AutoModelForCausalLM

    from tgpo_megatron.data.tokenizer import ResponseDecoder, load_tokenizer

    best = os.path.join(out, "best_student_hf")
    tokenizer = load_tokenizer(best)
    model = AutoModelForCausalLM.from_pretrained(best).eval()
    prompt = (
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "357+068="}], add_generation_prompt=True, tokenize=False
        )
        + "<think>\n"
    )
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == prompt  # the prompt's final newline included
    with torch.no_grad():
        answer = model.generate(
            ids,
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )[0, ids.shape[1] :]
    assert 0 < answer.numel() <= 24 and int(answer.max()) < len(tokenizer)
    assert isinstance(ResponseDecoder.for_model(tokenizer, best).decode(answer.tolist()), str)


def test_the_readmes_commands_run_as_written(demo):
    """After `make demo`, in a checkout: every README command this machine can run exits 0 (training on the
    demo's models, a second algorithm, their plot, `tgpo doctor` and `tgpo plan` on a GPU recipe); the others are
    named, with where they are checked."""
    work, _ = demo
    for name in ("examples", "tools"):
        os.symlink(os.path.join(ROOT, name), work / name)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    ran = []
    for command in readme_commands():
        if command.startswith(NEEDS_A_CLUSTER):
            continue
        run = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{command}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        ran.append(" ".join(command.split()[:2]))
    # a README edit that drops or renames one of these is caught here, not only one that breaks it
    assert ran == ["torchrun --nproc-per-node", "tgpo train", "tgpo plot-metrics", "tgpo doctor", "tgpo plan"], ran
    assert (work / "runs" / "x" / "hf" / "model.safetensors").exists() and (work / "runs" / "curves.png").exists()
