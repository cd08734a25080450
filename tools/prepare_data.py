"""Data preparation for the paper's protocol: LUFFY's validation file split into one de-duplicated file per
benchmark, with the authors' samples per problem; the training prompts the teacher solves, with its solution.

    python tools/prepare_data.py split --input data/valid.all.parquet --out data/eval
    python tools/prepare_data.py filter --input openr1.parquet --teacher TEACHER_DIR --out openr1.correct.parquet
"""

import sys

from tgpo_megatron.prepare_data import main

if __name__ == "__main__":
    sys.exit(main())
