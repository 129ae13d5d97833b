#!/bin/bash
# Hierarchical Crossover-SGD (an intra-node stage, then segment gossip between the nodes; one group
# per node), with the study's ImageNet recipe (imagenet-recipe.sh):
#   DATA=/path/to/imagenet scripts/slurm/examples/hierarchical-crossover.sh
ALGORITHM=hierarchical-crossover exec "$(dirname "$0")/imagenet-recipe.sh" "$@"
