#!/bin/bash
# Crossover-SGD (the model cut into segments, each gossiped with a different peer), with the
# study's ImageNet recipe (imagenet-recipe.sh): DATA=/path/to/imagenet scripts/slurm/examples/crossover.sh
ALGORITHM=crossover exec "$(dirname "$0")/imagenet-recipe.sh" "$@"
