"""Data preparation for the paper's protocol: LUFFY's validation file split into one de-duplicated file per
benchmark, with the authors' samples per problem.

    python tools/prepare_data.py split --input data/valid.all.parquet --out data/eval
"""
import sys

from tgpo_megatron.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
