"""The reference pages generated from code (docs/configuration.md, docs/metrics.md, docs/scaling.md's plan
tables) are what the code gives today."""

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
