"""The conversion and parity tools as a user runs them, including the one-line errors on bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")


def run_tool(tool, *args, nproc=1, timeout=600):
    launcher = (
        [sys.executable]
        if nproc == 1
        else [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--standalone"]
    )
    return subprocess.run(
        [*launcher, os.path.join(TOOLS, tool), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def error_lines(run):
    return [line for line in run.stderr.splitlines() if line.startswith("error: ")]


def refused(capsys, *args):
    """tools/check_parity.py's main on input it must refuse before any process group exists, in this process (a
    launch each would cost seconds of imports): its exit code and its error lines."""
    from tgpo_megatron.models.parity import main

    code = main([str(a) for a in args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def converted(tiny_models, tmp_path_factory):
    """HF -> Megatron (one process) -> HF (two processes, PP=2, with tokenizer files copied)."""
    hf = tiny_models["qwen3_head_dim48"]
    out = tmp_path_factory.mktemp("convert")
    ckpt, back = out / "ckpt", out / "hf"
    run = run_tool("convert_hf_to_megatron.py", "--hf", hf, "--out", ckpt)
    assert run.returncode == 0, run.stderr[-3000:]
    tokenizer = out / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "tokenizer_config.json").write_text("{}")
    run = run_tool(
        "convert_megatron_to_hf.py", "--ckpt", ckpt, "--out", back, "--pp", 2, "--tokenizer", tokenizer, nproc=2
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return hf, ckpt, back


@pytest.mark.slow
def test_conversion_round_trip(converted):
    hf, _, back = converted
    source, exported = load_file(f"{hf}/model.safetensors"), load_file(f"{back}/model.safetensors")
    assert sorted(source) == sorted(exported)
    assert all(torch.equal(source[k], exported[k]) for k in source)
    for name in ("config.json", "generation_config.json", "tokenizer_config.json"):
        assert os.path.exists(back / name), name
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(back).head_dim == 48


@pytest.mark.slow
def test_parity_tool_on_megatron_checkpoint_and_its_exit_codes(converted, tmp_path):
    hf, ckpt, _ = converted
    result = tmp_path / "parity.json"
    run = run_tool("check_parity.py", "--hf", hf, "--megatron", ckpt, "--tp", 2, "--json", result, nproc=2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "OK" in run.stdout and json.loads(result.read_text())["max_abs_diff"] <= 1e-4
    # TP=2 changes the summation order, so a zero tolerance must fail the gate.
    run = run_tool("check_parity.py", "--hf", hf, "--tp", 2, "--tolerance", 0, nproc=2)
    assert run.returncode == 1 and "FAIL" in run.stdout


@pytest.mark.slow
def test_mixture_of_experts_converts_at_ep2_and_back_at_ep1_bit_exact(tiny_models, tmp_path):
    hf = tiny_models["qwen3_moe_top2"]
    ckpt, back = tmp_path / "ckpt", tmp_path / "hf"
    run = run_tool("convert_hf_to_megatron.py", "--hf", hf, "--out", ckpt, "--ep", 2, nproc=2)
    assert run.returncode == 0, run.stderr[-3000:]
    run = run_tool("convert_megatron_to_hf.py", "--ckpt", ckpt, "--out", back)
    assert run.returncode == 0, run.stderr[-3000:]
    source, exported = load_file(f"{hf}/model.safetensors"), load_file(f"{back}/model.safetensors")
    assert sorted(source) == sorted(exported)
    assert all(torch.equal(source[k], exported[k]) for k in source)
    run = run_tool("check_parity.py", "--hf", hf, "--megatron", ckpt, "--ep", 2, nproc=2)
    assert run.returncode == 0 and "OK" in run.stdout, run.stdout + run.stderr[-3000:]


@pytest.mark.parametrize(
    "model, ep, message",
    [
        ("qwen3_moe_top2", 3, "ep=3 does not divide num_experts=8"),
        ("qwen2_tied", 2, "ep=2 needs a mixture-of-experts model; this one is dense (qwen2)"),
    ],
)
def test_expert_parallel_size_the_model_cannot_take(tiny_models, model, ep, message, capsys):
    code, lines = refused(capsys, "--hf", tiny_models[model], "--ep", ep)
    assert code == 2 and message in "\n".join(lines), lines


def test_unsupported_architecture(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MixtralForCausalLM"], "vocab_size": 8}))
    code, lines = refused(capsys, "--hf", tmp_path)
    assert code == 2
    assert lines == [
        f"error: {tmp_path}/config.json: unsupported architecture ['MixtralForCausalLM']; "
        "supported: ['LlamaForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM', "
        "'Qwen3MoeForCausalLM']"
    ]


def test_tp_not_dividing_heads(tiny_models, capsys):
    code, lines = refused(capsys, "--hf", tiny_models["qwen2_tied"], "--tp", 4)
    assert code == 2
    assert lines == ["error: tp=4 does not divide num_key_value_heads=2"]


def test_missing_checkpoint(tiny_models, tmp_path, capsys):
    code, lines = refused(capsys, "--hf", tiny_models["qwen2_tied"], "--megatron", tmp_path / "missing")
    assert code == 2
    assert lines == [f"error: {tmp_path / 'missing'}: checkpoint directory does not exist"]


@pytest.mark.slow
def test_truncated_checkpoint(converted, tmp_path):
    hf, ckpt, _ = converted
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(ckpt), str(broken)], check=True)
    for shard in broken.glob("*.distcp"):
        shard.write_bytes(shard.read_bytes()[:100])  # a copy interrupted part-way
    run = run_tool("check_parity.py", "--hf", hf, "--megatron", broken)
    assert run.returncode == 2
    lines = error_lines(run)
    assert len(lines) == 1 and "checkpoint is incomplete or corrupt" in lines[0], run.stderr[-2000:]
