"""What verifying a training checkpoint costs at the paper's shapes: sizes against a manifest, or checksums.

    python benchmarks/bench_checkpoint_verify.py              # 1 GiB synthetic shard (about a minute)
    python benchmarks/bench_checkpoint_verify.py --gib 4

Measures, on a synthetic shard file of ``--gib`` GiB written here (so read back from the page cache: the
best case for hashing; a parallel file system is slower), the read-and-hash throughput of each candidate
checksum, and the time to compare one file's size with its manifest entry. Then replays a 7B and a 70B
checkpoint of the distributed optimizer: 14 bytes a parameter (bf16 weights 2, fp32 main weights 4, Adam's two
moments 8), written as one shard file per rank (torch_dist), plus the small files (metadata, trainer state, RNG
per rank, tokenizer). "Per rank" assumes every rank hashes its own shard in parallel, reading at the measured
throughput; "one process" is a resume check on one rank.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import zlib

CHUNK = 16 << 20
BYTES_PER_PARAM = 14
SHAPES = (  # name, parameters, ranks (8 GPUs a node)
    ("Qwen2.5-Math-7B (1 node)", 7.6e9, 8),
    ("Llama-3.1-70B (8 nodes)", 70.6e9, 64),
)


def _crc32(path: str) -> int:
    value = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            value = zlib.crc32(chunk, value)
    return value


def _hashlib(name: str):
    def run(path: str) -> str:
        digest = hashlib.new(name)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    return run


CHECKSUMS = {
    "crc32 (zlib)": _crc32,
    "sha256": _hashlib("sha256"),
    "blake2b": _hashlib("blake2b"),
    "md5": _hashlib("md5"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gib", type=float, default=1.0)
    args = p.parse_args()
    size = int(args.gib * (1 << 30))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "__0_0.distcp")
        block = os.urandom(CHUNK)
        with open(path, "wb") as f:
            for _ in range(size // CHUNK):
                f.write(block)
        rates = {}
        for name, checksum in CHECKSUMS.items():
            checksum(path)  # warm the page cache
            start = time.perf_counter()
            checksum(path)
            rates[name] = size / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(10000):
            assert os.path.getsize(path) == size
        stat_s = (time.perf_counter() - start) / 10000

    print(f"synthetic shard: {args.gib:g} GiB; size check {stat_s * 1e6:.1f} µs a file\n")
    print("| checksum | GB/s (one core) | " + " | ".join(f"{n}: one process / per rank" for n, _, _ in SHAPES) + " |")
    print("|---|---|" + "---|" * len(SHAPES))
    for name, rate in rates.items():
        cells = []
        for _, params, ranks in SHAPES:
            total = params * BYTES_PER_PARAM
            cells.append(f"{total / rate / 60:.1f} min / {total / ranks / rate:.0f} s")
        print(f"| {name} | {rate / 1e9:.2f} | " + " | ".join(cells) + " |")
    cells = [f"{(ranks * 2 + 20) * stat_s * 1e3:.2f} ms" for _, _, ranks in SHAPES]  # shards + RNG + small files
    print("| sizes only | – | " + " | ".join(cells) + " |")
    for name, params, ranks in SHAPES:
        print(f"\n{name}: {params * BYTES_PER_PARAM / 1e12:.2f} TB a checkpoint, {ranks} shard files")


if __name__ == "__main__":
    main()
