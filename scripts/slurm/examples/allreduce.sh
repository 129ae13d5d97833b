#!/bin/bash
# AllReduce-SGD, the baseline (every gradient averaged over all ranks each step), with the study's
# ImageNet recipe (imagenet-recipe.sh): DATA=/path/to/imagenet scripts/slurm/examples/allreduce.sh
ALGORITHM=allreduce exec "$(dirname "$0")/imagenet-recipe.sh" "$@"
