#!/bin/bash
# SGP, stochastic gradient push (whole-model gossip with one peer per step), with the study's
# ImageNet recipe (imagenet-recipe.sh): DATA=/path/to/imagenet scripts/slurm/examples/sgp.sh
ALGORITHM=sgp exec "$(dirname "$0")/imagenet-recipe.sh" "$@"
