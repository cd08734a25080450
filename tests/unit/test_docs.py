"""The reference pages generated from code (docs/configuration.md, docs/metrics.md, docs/scaling.md's plan
tables) are what the code gives today."""

import ast
import glob
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_the_generated_pages_are_current():
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "update_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_recipe_key_is_documented():
    """The configuration reference needs a docstring on every field; the generator refuses one without."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import update_docs
    finally:
        sys.path.pop(0)
    text = update_docs.configuration()
    assert "`trainer.lr`" in text and "`eval.datasets[].judge`" in text and "`algorithm.chunk_tokens`" in text


def test_the_fault_table_has_a_row_from_every_fault_test():
    """docs/reliability.md is written from a run (tools/fault_table.py); a fault test added since, or a file of
    them the tool does not run, shows here without running anything."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        from fault_table import FAULT_TESTS
    finally:
        sys.path.pop(0)
    recording = {}
    for path in glob.glob(os.path.join(ROOT, "tests", "**", "test_*.py"), recursive=True):
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(a.arg == "fault_row" for a in node.args.args):
                recording[f"{os.path.basename(path)}::{node.name}"] = os.path.relpath(path, ROOT)
    assert len(recording) >= 10 and set(recording.values()) == set(FAULT_TESTS)
    with open(os.path.join(ROOT, "docs", "reliability.md")) as f:
        page = f.read()
    missing = [test for test in recording if f"`{test}" not in page]
    assert not missing, f"regenerate docs/reliability.md (tools/fault_table.py): no row from {missing}"
