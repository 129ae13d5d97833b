#!/bin/bash
# The study's large-batch ImageNet recipe (ResNet-50, LARS, mixed precision, poly decay, 21 local
# iterations: 128 x 21 x 32 ranks = 86,016 images per optimizer step) on 8 nodes x 4 GPUs, for the
# algorithm in $ALGORITHM. The per-algorithm scripts beside this one call it:
#
#   DATA=/scratch/imagenet scripts/slurm/examples/crossover.sh [more flags, e.g. --maxepoch 45]
#
# Any setting of ../train.sbatch can be given too: LAUNCH=mpirun, CONTAINER=crossover-sgd.sif, ...
here=$(cd "$(dirname "$0")" && pwd)
: "${NODES:=8}" "${GPUS_PER_NODE:=4}" "${CPUS_PER_RANK:=8}"
export NODES GPUS_PER_NODE CPUS_PER_RANK
export SCRIPT=${SCRIPT:-$(dirname "$(dirname "$(dirname "$here")")")/imagenet_test.py}
exec "$here/../train.sbatch" --batch_size 128 --lars True --amp True --lrdecay poly --lars_coef 0.0025 \
    --baselr 11 --warmup_epoch 36 --local_itr 21 --clip_grad True --sync_grad False \
    --sync_lars_start_epoch 200 --sync_lars_group_size 8 --chromosome fine --maxepoch 90 \
    --manual_seed 776 --gpu_per_node 2 --workers "$((CPUS_PER_RANK - 1))" "$@"
