"""The package's layers: its units (each top-level module or subpackage of tgpo_megatron) import one another
without a cycle, and the units a launcher runs on a login node import without torch."""

import ast
import os
import subprocess
import sys
from collections import defaultdict

PACKAGE = os.path.join(os.path.dirname(__file__), "..", "..", "tgpo_megatron")
TORCH_FREE = [
    "tgpo_megatron.cli",
    "tgpo_megatron.errors",
    "tgpo_megatron.config",
    "tgpo_megatron.config.arch",
    "tgpo_megatron.config.doctor",
    "tgpo_megatron.config.layouts",
    "tgpo_megatron.config.memory",
    "tgpo_megatron.config.plan",
    "tgpo_megatron.config.validation",
    "tgpo_megatron.run.launch",
    "tgpo_megatron.run.layout",
    "tgpo_megatron.losses.registry",
    "tgpo_megatron.losses.coefficients",
    "tgpo_megatron.losses.aggregation",
]
"""What examples/launch_nemo_run.py and the Slurm job's `tgpo plan`/`tgpo doctor` import before any GPU work."""


def unit_of(module: str) -> str:
    return module.split(".")[1]


def import_graph() -> dict[str, set[str]]:
    """Unit -> the units its modules import (function-level imports included)."""
    edges: dict[str, set[str]] = defaultdict(set)
    root = os.path.abspath(PACKAGE)
    for directory, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            module = ".".join(["tgpo_megatron", *os.path.relpath(path, root)[: -len(".py")].split(os.sep)])
            module = module.removesuffix(".__init__")
            if module == "tgpo_megatron":
                continue
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tgpo_megatron"):
                    targets = (
                        [node.module]
                        if node.module != "tgpo_megatron"
                        else [f"tgpo_megatron.{a.name}" for a in node.names]
                    )
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names if a.name.startswith("tgpo_megatron.")]
                else:
                    continue
                for target in targets:
                    if unit_of(target) != unit_of(module):
                        edges[unit_of(module)].add(unit_of(target))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan)."""
    index, low, stack, found = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def test_the_units_of_the_package_import_one_another_without_a_cycle():
    edges = import_graph()
    assert {"config", "run", "distributed", "models", "trainer"} <= set(edges)  # the graph was read
    found = cycles(edges)
    assert not found, "import cycles between units: " + "; ".join(
        " <-> ".join(f"{u} -> {sorted(edges[u] & set(c))}" for u in c) for c in found
    )


def test_a_cycle_is_found_where_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_what_the_launchers_import_needs_no_torch():
    blocked = "import sys; sys.modules['torch'] = None  # `import torch` now raises ImportError\n"
    run = subprocess.run(
        [sys.executable, "-c", blocked + "\n".join(f"import {m}" for m in TORCH_FREE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
