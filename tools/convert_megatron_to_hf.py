"""Convert a Megatron checkpoint into a Hugging Face directory (safetensors, config, tokenizer).

Run with --help for usage and examples.
"""

import sys

from tgpo_megatron.models.convert import megatron_to_hf_main

if __name__ == "__main__":
    sys.exit(megatron_to_hf_main())
