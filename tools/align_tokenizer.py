"""Give a teacher and a student of one tokenizer family one token-id space (TGPO passes ids between them).

    python tools/align_tokenizer.py --student /models/Qwen2.5-Math-7B --teacher /models/Qwen3-8B \
        --out-student /models/Qwen2.5-Math-7B-aligned --out-teacher /models/Qwen3-8B-aligned

Refuses, with an explanation, a pair whose base vocabularies differ (e.g. a Qwen and a Llama tokenizer).
"""

import sys

from tgpo_megatron.data.align import main

if __name__ == "__main__":
    sys.exit(main())
