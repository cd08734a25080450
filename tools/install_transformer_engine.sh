#!/usr/bin/env bash
# Transformer Engine 2.11 for the environment `pip install -e ".[gpu]"` made (docs/gpu.md): its core library
# from the prebuilt wheel, its PyTorch binding compiled against the torch already installed (vLLM's 2.14.0),
# without build isolation (isolated, pip would build it against the newest torch on the index, and it would not
# load). Needs nvcc 13 (CUDA_HOME, default /usr/local/cuda); the CUDA, cuDNN and NCCL headers come from the wheels
# torch installed. Run it with that environment's python first on PATH (or PYTHON=/path/to/python):
#
#   bash tools/install_transformer_engine.sh        # NVTE_CUDA_ARCHS (default 90: H100/H200), MAX_JOBS
set -euo pipefail
PY=${PYTHON:-python}
"$PY" -c "import torch; print('building against torch', torch.__version__, 'CUDA', torch.version.cuda)"
"$PY" -m pip install ninja pybind11 pydantic einops importlib-metadata onnx onnxscript
"$PY" -m pip install --no-deps "transformer_engine_cu13==2.11.0" "transformer_engine==2.11.0"
site=$("$PY" -c "import site; print(site.getsitepackages()[0])")
include=$site/nvidia/cu13/include:$site/nvidia/cudnn/include:$site/nvidia/nccl/include
lib=$site/nvidia/cu13/lib:$site/nvidia/cudnn/lib:$site/nvidia/nccl/lib
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} NVTE_FRAMEWORK=pytorch NVTE_CUDA_ARCHS=${NVTE_CUDA_ARCHS:-90} \
  MAX_JOBS=${MAX_JOBS:-8} CUDNN_PATH=$site/nvidia/cudnn CPATH=$include${CPATH:+:$CPATH} \
  LIBRARY_PATH=$lib${LIBRARY_PATH:+:$LIBRARY_PATH} \
  "$PY" -m pip install --no-build-isolation --no-deps "transformer_engine_torch==2.11.0"
"$PY" -c "import transformer_engine.pytorch; print('Transformer Engine loads')"
