"""Write `tgpo plan`'s table for every shipped GPU recipe into docs/scaling.md (between its plan markers).

    python tools/update_scaling_doc.py           # rewrite the section
    python tools/update_scaling_doc.py --check   # exit 1 if the section is not what the plans give today

The recipes' models are read from examples/model_configs (their published config.json shapes, as `tgpo plan`
does where the models are absent), so this runs anywhere, without weights or torch.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tgpo_megatron.config import load_config  # noqa: E402
from tgpo_megatron.config.plan import make_plan, render, shapes_for  # noqa: E402

DOC = os.path.join(ROOT, "docs", "scaling.md")
BEGIN, END = "<!-- tgpo plan tables: begin (tools/update_scaling_doc.py) -->", "<!-- tgpo plan tables: end -->"


def section() -> str:
    parts = [BEGIN]
    for recipe in sorted(glob.glob(os.path.join(ROOT, "examples", "recipes", "*.yaml"))):
        config = load_config(recipe)
        notes: list[str] = []
        arch_of = shapes_for(recipe, notes)
        try:
            plan = make_plan(config, arch_of)
        except FileNotFoundError:
            continue  # the CPU demo's recipes: their models are made by `tgpo demo`
        plan.notes += notes
        name = os.path.relpath(recipe, ROOT)
        s, t, r = config.student, config.teacher, config.rollout
        parts += [
            "",
            f"### `{name}`",
            "",
            f"{config.launch.nodes} node(s) x {config.launch.gpus_per_node} GPUs of "
            f"{config.launch.gpu_memory_gb} GiB; student TP{s.tp} PP{s.pp} ({s.transformer_impl}, recompute "
            f"{s.recompute}), teacher TP{t.tp} PP{t.pp} EP{t.ep} ({t.transformer_impl}), vLLM TP{r.tp} at "
            f"{r.gpu_memory_utilization} of the GPU, {config.trainer.micro_batch_tokens}-token micro-batches. "
            f"`tgpo plan --config {name}`:",
            "",
            render(plan),
        ]
    return "\n".join(parts + ["", END])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="compare only; exit 1 when the doc is stale")
    args = p.parse_args()
    with open(DOC) as f:
        text = f.read()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    updated = text[:start] + section() + text[end:]
    if args.check:
        if updated != text:
            print(f"{DOC} is stale: run python tools/update_scaling_doc.py", file=sys.stderr)
            return 1
        return 0
    with open(DOC, "w") as f:
        f.write(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
