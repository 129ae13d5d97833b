#!/usr/bin/env python3
"""The study's training script, flag for flag: ``srun python imagenet_test.py --crossover True ...``.

A thin entry point over :mod:`crossover_sgd.legacy`; ``crossover-sgd train`` is the same loop
with readable flags.
"""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run from a checkout, too
    from crossover_sgd.legacy import main
    from crossover_sgd.runtime.exit import exit_process

    exit_process(main(script=os.path.abspath(__file__)))
