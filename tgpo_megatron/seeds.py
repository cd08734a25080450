"""Every random stream of a run derives from ``trainer.seed`` (or ``data.seed``) through one function.

A stream is named by its purpose and indices (the step, the epoch): a hash of the three, so that two streams
never coincide, as products of magic multipliers can (seed·1000 + step for one use meets seed·100003 + step
of another). 31 bits: every library we hand a seed to (torch, vLLM, Python's random) accepts it.
"""

from __future__ import annotations

import hashlib


def derive_seed(base: int, purpose: str, *indices: int) -> int:
    """The seed of ``purpose``'s stream at ``indices`` (e.g. ``derive_seed(seed, "rollout", step)``)."""
    digest = hashlib.blake2b(repr((int(base), purpose, *map(int, indices))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 33
