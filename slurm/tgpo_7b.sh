#!/bin/bash
# The paper's main setting: Qwen2.5-Math-7B distilled from DeepSeek-R1-Distill-Qwen-32B on one node of
# 8 H100/H800 80 GB. Submit from the repository root; arguments are dotted overrides of the recipe:
#
#   CONTAINER_IMAGE=/lustre/images/tgpo.sqsh RUN_DIR=/lustre/$USER/runs/tgpo-7b \
#       sbatch --account=ACCOUNT --partition=PARTITION slurm/tgpo_7b.sh
#
# Settings and the requeue/stop protocol: slurm/train_job.sh. Choosing layouts: docs/scaling.md.
#
# Layouts (examples/recipes/qwen2.5_math_7b_tgpo.yaml), 8 ranks:
#   student  TP2, DP4
#   teacher  TP4, 2 replicas  (32.8B, frozen; forward only)
#   vLLM     TP2, 4 replicas
# Memory per GPU, 7.6B student, bf16 weights, fp32 gradients, distributed Adam:
#   student weights    7.6e9 x 2 B / 2             =  7.6 GB
#   student gradients  7.6e9 x 4 B / 2             = 15.2 GB
#   optimizer shard    7.6e9 x 12 B / 8            = 11.4 GB   (fp32 main copy + Adam m, v over DP4 x TP2)
#   vLLM weights       7.6e9 x 2 B / 2             =  7.6 GB   (released while the student trains)
#   KV cache           ~25 GB: 28 KiB per token per GPU at TP2 -> ~870k tokens per replica (~95 x 9k-token sequences)
#   teacher weights    32.8e9 x 2 B / 4            = 16.4 GB   in host memory between uses (131 GB per node),
#                                                              on the GPU only for its forward, while vLLM sleeps
#   peak: generation ~67 GB (student 34.3 + vLLM 7.6 + KV 25); training ~34 GB + activations
#SBATCH --job-name=tgpo-7b
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@900
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

RECIPE=${RECIPE:-examples/recipes/qwen2.5_math_7b_tgpo.yaml}
# shellcheck source=slurm/train_job.sh
source "${SLURM_SUBMIT_DIR:-.}/slurm/train_job.sh"
