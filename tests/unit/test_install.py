"""The GPU install says what it does: `pip install ".[gpu]"` resolves to prebuilt wheels only, with the vLLM and
torch versions the README states. Resolving needs the package index; without it the test is skipped, saying so."""

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
