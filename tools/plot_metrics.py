"""A run's metrics.jsonl as PNG curves, one panel per metric, several runs overlaid.

python tools/plot_metrics.py runs/grpo runs/tgpo --metrics reward/mean gap/reverse_kl_k1 --out curves.png
"""

import sys

from tgpo_megatron.run.plot import main

if __name__ == "__main__":
    sys.exit(main())
