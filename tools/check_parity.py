"""Compare our Megatron-Core model's logits with Hugging Face transformers on a fixed batch.

    torchrun --nproc-per-node 2 tools/check_parity.py --hf /models/Qwen2.5-1.5B --tp 2 --pp 1

Run with --help for every option; the same command is available as `tgpo check-parity`.
"""

import sys

from tgpo_megatron.models.parity import main

if __name__ == "__main__":
    sys.exit(main())
