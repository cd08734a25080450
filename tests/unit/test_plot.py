"""tools/plot_metrics.py on metrics.jsonl files written here."""

import json
import os
import subprocess
import sys

from tgpo_megatron.run.plot import main

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "plot_metrics.py")


def write_run(path, rewards):
    path.mkdir()
    with open(path / "metrics.jsonl", "w") as f:
        for step, reward in enumerate(rewards, start=1):
            f.write(json.dumps({"step": step, "reward/mean": reward, "loss/total": 1.0 / step}) + "\n")
    return str(path)


def test_runs_are_overlaid_in_one_png(tmp_path):
    a, b = write_run(tmp_path / "grpo", [0.1, 0.2, 0.3]), write_run(tmp_path / "tgpo", [0.1, 0.3, 0.5])
    out = tmp_path / "curves.png"
    run = subprocess.run(
        [sys.executable, TOOL, a, b, "--metrics", "reward/mean", "loss/total", "gap/x", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "reward/mean, loss/total" in run.stdout


def test_a_metric_no_run_logged_is_one_clear_error(tmp_path, capsys):
    a = write_run(tmp_path / "grpo", [0.1])
    assert main([a, "--metrics", "gap/x", "--out", str(tmp_path / "c.png")]) == 2
    assert "none of gap/x was logged; the runs logged: loss/total, reward/mean, step" in capsys.readouterr().err
