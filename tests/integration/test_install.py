"""The GPU install says what it does: `pip install ".[gpu]"` resolves to prebuilt wheels only (nothing compiled on a
user's node), with the vLLM and torch versions the README states, and every prebuilt package that is tied to one
torch release is tied to the torch that vLLM pins. Resolving needs the package index; without it the test is
skipped, saying so."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="module")
def gpu_resolution(tmp_path_factory):
    report = tmp_path_factory.mktemp("pip") / "report.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            f"{ROOT}[gpu]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if run.returncode != 0:
        if re.search(r"(?i)(connection|network|resolve host|timed out|No matching distribution)", run.stderr):
            pytest.skip(f"the package index cannot be reached from here: {run.stderr.strip().splitlines()[-1]}")
        pytest.fail(f"pip could not resolve the gpu extra:\n{run.stderr[-3000:]}")
    install = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower().replace("_", "-"): item for item in install}


def test_the_gpu_extra_installs_prebuilt_wheels_only(gpu_resolution):
    ours = {"tgpo-megatron"}  # this checkout itself
    built_here = sorted(
        f"{name} ({item['download_info']['url'].rsplit('/', 1)[-1]})"
        for name, item in gpu_resolution.items()
        if name not in ours and not item["download_info"]["url"].endswith(".whl")
    )
    assert not built_here, f"the gpu extra would build from source: {built_here}"


def test_the_gpu_extra_has_the_versions_the_readme_states(gpu_resolution):
    with open(os.path.join(ROOT, "README.md")) as f:
        stated = re.search(r"installs vLLM ([\d.]+) with its torch ([\d.]+)", f.read())
    assert stated, "README: the GPU install line names vLLM's and torch's versions"
    resolved = (gpu_resolution["vllm"]["metadata"]["version"], gpu_resolution["torch"]["metadata"]["version"])
    assert resolved == stated.groups()
    assert gpu_resolution["megatron-core"]["metadata"]["version"] == "0.16.1"


def test_every_package_built_for_one_torch_is_built_for_the_torch_vllm_pins(gpu_resolution):
    """A compiled package pinned to another torch release than the one installed fails to import (undefined
    symbols): what broke NGC's prebuilt Transformer Engine under vLLM's torch."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    torch_version = gpu_resolution["torch"]["metadata"]["version"]
    exact = {}
    for name, item in gpu_resolution.items():
        for line in item["metadata"].get("requires_dist", []):
            requirement = Requirement(line)
            applies = requirement.marker is None or requirement.marker.evaluate({"extra": ""})
            if requirement.name == "torch" and applies and "==" in str(requirement.specifier):
                exact[name] = str(requirement.specifier)
    assert exact["vllm"] == f"=={torch_version}"
    assert len(exact) > 1, exact  # torchvision too: the check is not vLLM's alone
    built_for_another = {name: spec for name, spec in exact.items() if torch_version not in SpecifierSet(spec)}
    assert not built_for_another, f"pinned to another torch than {torch_version}: {built_for_another}"
