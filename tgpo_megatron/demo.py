"""``tgpo demo``: the embedded default, run on a laptop CPU with 2 processes.

At this stage of the project the demo exercises the foundation end to end: it writes tiny random models of
each supported family, then checks in real 2-process Megatron-Core runs (gloo) that our models at TP=2 and
at PP=2 reproduce the transformers logits, and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from tgpo_megatron.models.tiny import save_tiny_hf_model

FAMILIES = {
    "qwen2 (tied embeddings)": dict(family="qwen2", tie_word_embeddings=True),
    "qwen3 (head_dim 48)": dict(family="qwen3"),
    "llama 3.1 (rope scaling)": dict(family="llama", rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}),
}
LAYOUTS = ((2, 1), (1, 2))


def _torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--standalone",
           "-m", "tgpo_megatron.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tgpo demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo", help="where the tiny models are written")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows, failed = [], False
    for label, spec in FAMILIES.items():
        model_dir = os.path.join(args.out, spec["family"])
        save_tiny_hf_model(model_dir, vocab_size=251, **spec)
        for tp, pp in LAYOUTS:
            with tempfile.NamedTemporaryFile(suffix=".json") as result:
                run = _torchrun(2, "check-parity", "--hf", model_dir, "--tp", str(tp), "--pp", str(pp),
                                "--json", result.name)
                if run.returncode not in (0, 1):
                    print(run.stdout[-4000:], run.stderr[-4000:], sep="\n")
                    return run.returncode
                diff = json.load(open(result.name))["max_abs_diff"]
            failed |= run.returncode != 0
            rows.append((label, f"TP={tp} PP={pp}", f"{diff:.2e}", "OK" if run.returncode == 0 else "FAIL"))
            print(f"  {rows[-1][0]:<26} {rows[-1][1]:<10} max|Δlogit| {rows[-1][2]}  {rows[-1][3]}", flush=True)
    print("\n| model | layout | max abs logit diff vs transformers | |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 1 if failed else 0
