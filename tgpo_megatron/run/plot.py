"""A run's ``metrics.jsonl`` as PNG curves, one panel per metric, several runs overlaid.

    tgpo plot-metrics runs/grpo runs/tgpo --metrics reward/mean gap/reverse_kl_k1 --out curves.png

Each run directory (or metrics.jsonl file) is one line per panel, labelled by its directory name. A metric a
run did not log is left out of that run's line; a metric no run logged is an error naming what was logged.
"""

from __future__ import annotations

import math
import os

from tgpo_megatron.cli import command_parser
from tgpo_megatron.errors import UserError, exit_on_user_error
from tgpo_megatron.run.layout import read_metrics

DEFAULT_METRICS = (
    "reward/mean",
    "loss/total",
    "gap/reverse_kl_k1",
    "gap/mismatch_ratio",
    "optim/grad_norm",
    "rollout/response_length",
)


def plot_runs(runs: dict[str, list[dict]], metrics: list[str], out: str) -> list[str]:
    """Write the panels of ``metrics`` (those some run logged) to ``out``; returns the metrics plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logged = sorted({key for rows in runs.values() for row in rows for key in row})
    shown = [m for m in metrics if m in logged]
    if not shown:
        raise UserError(f"none of {', '.join(metrics)} was logged; the runs logged: {', '.join(logged)}")
    columns = min(3, len(shown))
    rows_of_panels = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4.5 * columns, 3.2 * rows_of_panels), squeeze=False)
    for ax, metric in zip(axes.flat, shown):
        for name, rows in runs.items():
            points = [(r["step"], r[metric]) for r in rows if metric in r and r[metric] is not None]
            if points:
                ax.plot(*zip(*points), label=name)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return shown


@exit_on_user_error
def main(argv=None) -> int:
    p = command_parser("tgpo plot-metrics", __doc__)
    p.add_argument("runs", nargs="+", help="run directories (or metrics.jsonl files)")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    p.add_argument("--out", default="metrics.png")
    args = p.parse_args(argv)
    runs = {
        os.path.basename(os.path.normpath(os.path.dirname(r) if r.endswith(".jsonl") else r)): read_metrics(r)
        for r in args.runs
    }
    shown = plot_runs(runs, args.metrics, args.out)
    print(f"wrote {args.out}: {', '.join(shown)}")
    return 0
