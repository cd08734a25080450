#!/usr/bin/env bash
# Checks that need a CUDA GPU (never run by CI). From the repository root on a GPU machine:
#     bash tests/gpu/run_all.sh
# 1. logits parity of our Megatron-Core models against transformers on CUDA in bfloat16 for every family
#    (Qwen3-MoE too, at EP=2 when there are 2 GPUs), with the local (SDPA) layer spec, and with the
#    Transformer Engine spec (grouped-GEMM experts) when TE is importable;
# 2. one teacher annotate, old-log-prob pass and student update of tiny models on the GPU, packed and padded,
#    with the memory each phase took (tests/gpu/step_check.py);
# 3. the fused loss head's GPU row (benchmarks/bench_loss_head.py) at 8,192 tokens of a 152k vocabulary.
# vLLM is not needed (nothing here generates). One call should take well under 10 minutes on one H200.
set -euo pipefail
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=4

"$PY" -m tgpo_megatron.cli tiny-model --family qwen2 --tie-word-embeddings --out "$work/qwen2" >/dev/null
"$PY" -m tgpo_megatron.cli tiny-model --family qwen3 --out "$work/qwen3" >/dev/null
"$PY" -m tgpo_megatron.cli tiny-model --family llama --out "$work/llama" >/dev/null
"$PY" -m tgpo_megatron.cli tiny-model --family qwen3_moe --out "$work/qwen3_moe" >/dev/null

impls=(local)
if "$PY" -c "import transformer_engine.pytorch" 2>/dev/null; then impls+=(transformer_engine); fi
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
status=0
for impl in "${impls[@]}"; do
  for family in qwen2 qwen3 llama qwen3_moe; do
    for dtype in float32 bfloat16; do
      echo "== $family $impl $dtype (1 GPU)"
      "$PY" tools/check_parity.py --hf "$work/$family" --dtype "$dtype" --transformer-impl "$impl" || status=1
      if [ "$gpus" -ge 2 ]; then
        echo "== $family $impl $dtype (TP=2)"
        "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 tools/check_parity.py \
          --hf "$work/$family" --dtype "$dtype" --transformer-impl "$impl" --tp 2 || status=1
        if [ "$family" = qwen3_moe ]; then
          echo "== $family $impl $dtype (EP=2)"
          "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 tools/check_parity.py \
            --hf "$work/$family" --dtype "$dtype" --transformer-impl "$impl" --ep 2 || status=1
        fi
      fi
    done
  done
done
echo "== one packed step on the GPU: teacher annotate, old log-probs, student update (bf16)"
"$PY" tests/gpu/step_check.py || status=1
echo "== fused loss head, GPU row"
"$PY" benchmarks/bench_loss_head.py --tokens 8192 --device cuda --dtype bfloat16 --tp 1 \
  --variants straightforward fused fused_inplace || status=1
exit $status
