"""Offline teacher-student divergence on the student's own rollouts (teacher perplexity, top-k overlap,
log ρ statistics, frac(ρ>1), mismatch ratio), as the paper's reviewer report.

    python tools/measure_divergence.py --student /models/Qwen2.5-Math-1.5B-aligned \
        --teacher /models/Qwen3-30B-A3B-Thinking-aligned --data openr1.parquet --prompts 64 --n 4 --out gap.json
"""

import sys

from tgpo_megatron.divergence import main

if __name__ == "__main__":
    sys.exit(main())
