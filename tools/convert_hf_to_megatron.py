"""Convert a Hugging Face model directory into a Megatron distributed checkpoint.

Run with --help for usage and examples.
"""

import sys

from tgpo_megatron.models.convert import hf_to_megatron_main

if __name__ == "__main__":
    sys.exit(hf_to_megatron_main())
