#!/usr/bin/env bash
# Puts in tests/gpu/wheels what tests/gpu/run_all.sh needs on a GPU machine that has only torch and transformers:
# Megatron-Core and the two small packages it and this project import there (psutil, einops); run_all.sh
# installs them into a temporary directory when Megatron-Core is missing. Run it here, before carrying the
# working tree to that machine (about 3 MB). PYTHON_VERSION: that machine's Python (default 3.12).
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=tests/gpu/wheels
rm -rf "$dest"
mkdir -p "$dest"
python3 -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
  --python-version "${PYTHON_VERSION:-3.12}" --platform manylinux_2_28_x86_64 --dest "$dest" \
  "megatron-core==0.16.1" "psutil>=5.9" "einops>=0.8"
ls "$dest"
du -sh "$dest"
