#!/usr/bin/env bash
# Builds the container image the Slurm scripts run in (CONTAINER_IMAGE, default tgpo_megatron.sqsh in the
# repository), with enroot, from a CUDA base image without PyTorch: Python 3.12, then `pip install ".[gpu]"`
# into /opt/tgpo (vLLM 0.33.0 with its torch 2.14.0 for CUDA 13, Megatron-Core 0.16.1: prebuilt wheels,
# nothing compiled; docs/gpu.md). The code itself is not in the image: the jobs run it from the repository,
# mounted, so code changes need no new image. Run it from the repository root on a node with enroot:
#
#   bash slurm/build_image.sh [OUTPUT.sqsh]
#
# The nodes need an NVIDIA driver for CUDA 13 (580 or newer). Not run in this repository's CI (no enroot).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-tgpo_megatron.sqsh}
base=${BASE_IMAGE:-docker://nvcr.io#nvidia/cuda:13.0.1-base-ubuntu24.04}
name=tgpo-build-$$
work=$(mktemp -d)
trap 'enroot remove -f "$name" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
enroot import -o "$work/base.sqsh" "$base"
enroot create -n "$name" "$work/base.sqsh"
# shellcheck disable=SC2016  # expanded inside the container
enroot start --root --rw --mount "$PWD:/src" "$name" bash -ec '
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc g++
  python3 -m venv /opt/tgpo
  /opt/tgpo/bin/pip install --upgrade pip
  cp -r /src /tmp/src && rm -rf /tmp/src/.venv* /tmp/src/runs
  /opt/tgpo/bin/pip install "/tmp/src[gpu]" && /opt/tgpo/bin/pip uninstall -y tgpo_megatron
  rm -rf /tmp/src /root/.cache/pip
  echo "PATH=/opt/tgpo/bin:$PATH" >> /etc/environment
  /opt/tgpo/bin/python -c "import torch, vllm, megatron.core; print(\"image: torch\", torch.__version__, \"vLLM\", vllm.__version__)"'
enroot export -o "$out" "$name"
echo "wrote $out; check it on a GPU node: srun --container-image=$out python -m tgpo_megatron.cli doctor"
