#!/usr/bin/env bash
# Checks that need a CUDA GPU (never run by CI). From the repository root on a GPU machine:
#     bash tests/gpu/run_all.sh
# Without CUDA it stops at once (exit 1, one line). It says which optional parts it cannot test here and skips
# those checks by name: Transformer Engine, vLLM, a second GPU. What it checks:
# 1. logits parity against transformers for every model family (Qwen2, Qwen3, Llama, Qwen3-MoE), packed into one
#    THD row as training runs, in fp32 and bf16, with the local spec and, where it loads, Transformer Engine's
#    (fp32 with TF32 off, NVIDIA_TF32_OVERRIDE=0); TP=2 and EP=2 with two GPUs;
# 2. one teacher annotate, old-log-prob pass and student update, packed against padded, with the recipes'
#    student settings: full recompute, and with TE at TP=2 sequence parallelism (tests/gpu/step_check.py);
# 3. with vLLM, a 3-step `tgpo train` on one GPU: sleep -> refit -> wake, CUDA graphs on, the memory at each
#    wake beside tgpo plan's phases (tests/gpu/train_check.py);
# 4. the fused loss head's GPU row at 8,192 tokens of a 152k vocabulary (benchmarks/bench_loss_head.py).
# On a machine with torch alone (no Megatron-Core), the wheels that tests/gpu/carry_wheels.sh put in
# tests/gpu/wheels are installed into a temporary directory first (docs/gpu.md). About 6 minutes on one H100.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
PY=${PYTHON:-python3}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "run_all.sh: CUDA is not available here (torch.cuda.is_available() is False, or no torch): nothing checked" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=4
if ! "$PY" -c "import megatron.core" 2>/dev/null; then
  if [ ! -d tests/gpu/wheels ]; then
    echo "run_all.sh: megatron-core is not installed and tests/gpu/wheels is absent (tests/gpu/carry_wheels.sh)" >&2
    exit 1
  fi
  "$PY" -m pip install -q --no-index --no-deps --target "$work/site" tests/gpu/wheels/*.whl || exit 1
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
"$PY" -c "import transformer_engine.pytorch" 2>/dev/null && te=1 || te=0
"$PY" -c "import vllm" 2>/dev/null && vllm=1 || vllm=0
"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, {p.total_memory / 2**30:.1f} GiB; torch {torch.__version__}')"
echo "GPUs: $gpus; Transformer Engine: $([ "$te" = 1 ] && echo yes || echo no); vLLM: $([ "$vllm" = 1 ] && echo yes || echo no)"
skipped=()
[ "$te" = 1 ] || skipped+=("Transformer Engine is not installed: its parity, step and training checks")
[ "$vllm" = 1 ] || skipped+=("vLLM is not installed: the 3-step training run (sleep, refit, wake, memory)")
[ "$gpus" -ge 2 ] || skipped+=("one GPU: parity at TP=2 and EP=2, the student step at TP=2")
for s in "${skipped[@]}"; do echo "SKIPPED: $s"; done

status=0
failed() { echo "FAILED: $1"; status=1; }
for family in qwen2 qwen3 llama qwen3_moe; do
  extra=(); [ "$family" = qwen2 ] && extra=(--tie-word-embeddings)
  "$PY" -m tgpo_megatron.cli tiny-model --family "$family" "${extra[@]}" --out "$work/$family" >/dev/null || failed "tiny $family"
done
impls=(local); [ "$te" = 1 ] && impls+=(transformer_engine)
for impl in "${impls[@]}"; do
  for family in qwen2 qwen3 llama qwen3_moe; do
    for dtype in float32 bfloat16; do
      tf32=(); [ "$impl" = transformer_engine ] && [ "$dtype" = float32 ] && tf32=(NVIDIA_TF32_OVERRIDE=0)
      parity=(tools/check_parity.py --hf "$work/$family" --dtype "$dtype" --transformer-impl "$impl" --packed)
      echo "== parity $family $impl $dtype packed (1 GPU)"
      env "${tf32[@]}" "$PY" "${parity[@]}" || failed "parity $family $impl $dtype"
      if [ "$gpus" -ge 2 ]; then
        layout=(--tp 2); [ "$family" = qwen3_moe ] && layout=(--ep 2)
        echo "== parity $family $impl $dtype packed (${layout[*]})"
        env "${tf32[@]}" "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 "${parity[@]}" "${layout[@]}" \
          || failed "parity $family $impl $dtype ${layout[*]}"
      fi
    done
  done
done
for impl in "${impls[@]}"; do
  echo "== one step, $impl, recompute full (1 GPU)"
  "$PY" tests/gpu/step_check.py --transformer-impl "$impl" --recompute full || failed "step $impl"
  if [ "$gpus" -ge 2 ]; then
    sp=(); [ "$impl" = transformer_engine ] && sp=(--sequence-parallel)
    echo "== one step, $impl, TP=2 ${sp[*]} recompute full"
    "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 tests/gpu/step_check.py --transformer-impl "$impl" \
      --tp 2 "${sp[@]}" --recompute full || failed "step $impl TP=2"
  fi
  if [ "$vllm" = 1 ]; then
    echo "== 3 steps of tgpo train with vLLM, $impl"
    "$PY" tests/gpu/train_check.py --transformer-impl "$impl" || failed "train $impl"
  fi
done
echo "== fused loss head, GPU row"
"$PY" benchmarks/bench_loss_head.py --tokens 8192 --device cuda --dtype bfloat16 --tp 1 \
  --variants straightforward fused fused_inplace || failed "loss head benchmark"
echo "run_all.sh: $([ $status = 0 ] && echo passed || echo FAILED) (${#skipped[@]} part(s) skipped, named above)"
exit $status
