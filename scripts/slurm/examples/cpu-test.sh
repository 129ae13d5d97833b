#!/bin/bash
# A CPU-only check of a Slurm setup, end to end in a few minutes: no GPU, no data set, the same job
# script as the real runs (../train.sbatch), Gloo instead of NCCL. 4 ranks train the built-in digits
# job with Crossover-SGD for 10 epochs and must reach val_acc >= 0.9 in OUT/summary.json:
#
#   scripts/slurm/examples/cpu-test.sh                 # then: cat runs/crossover-<jobid>/summary.json
#   ALGORITHM=sgp LAUNCH=mpiexec scripts/slurm/examples/cpu-test.sh --epochs 5
#
# The test suite submits this script to a real (single-node) Slurm cluster: tests/hpc.
: "${ALGORITHM:=crossover}" "${NODES:=1}" "${GPUS_PER_NODE:=4}" "${CPUS_PER_RANK:=1}"
export ALGORITHM NODES GPUS_PER_NODE CPUS_PER_RANK DEVICE=cpu
exec "$(dirname "$0")/../train.sbatch" --epochs 10 "$@"
