#!/bin/bash
# TGPO at 70B: Llama-3.1-70B distilled from DeepSeek-R1-Distill-Llama-70B on 8 nodes x 8 H100/H800 80 GB.
# Submit from the repository root; arguments are dotted overrides of the recipe:
#
#   CONTAINER_IMAGE=/lustre/images/tgpo.sqsh RUN_DIR=/lustre/$USER/runs/tgpo-70b \
#       sbatch --account=ACCOUNT --partition=PARTITION slurm/tgpo_70b.sh trainer.steps=300
#
# Settings and the requeue/stop protocol: slurm/train_job.sh. Choosing layouts: docs/scaling.md.
#
# Layouts (examples/recipes/llama3.1_70b_tgpo.yaml), 64 ranks:
#   student  TP8 x PP2, DP4   (TP inside a node, the two pipeline stages on two nodes)
#   teacher  TP8, 8 replicas  (frozen; forward only)
#   vLLM     TP8, 8 replicas  (one per node)
# Memory per GPU, 70.6B parameters, bf16 weights, fp32 gradients, distributed Adam:
#   student weights    70.6e9 x 2 B / 16           =  8.8 GB
#   student gradients  70.6e9 x 4 B / 16           = 17.6 GB
#   optimizer shard    70.6e9 x 12 B / 64          = 13.2 GB   (fp32 main copy + Adam m, v over DP4 x TP8 x PP2)
#   vLLM weights       70.6e9 x 2 B / 8            = 17.6 GB   (released while the student trains)
#   KV cache           ~15 GB: 40 KiB per token per GPU at TP8 -> ~366k tokens per replica (~40 x 9k-token sequences)
#   teacher weights    70.6e9 x 2 B / 8            = 17.6 GB   in host memory between uses (141 GB per node),
#                                                              on the GPU only for its forward, while vLLM sleeps
#   peak: generation ~72 GB (student 39.7 + vLLM 17.6 + KV 15); training ~40 GB + activations
#SBATCH --job-name=tgpo-70b
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@900
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

RECIPE=${RECIPE:-examples/recipes/llama3.1_70b_tgpo.yaml}
# shellcheck source=slurm/train_job.sh
source "${SLURM_SUBMIT_DIR:-.}/slurm/train_job.sh"
