"""``python -m crossover_sgd.plotting RUN_DIR...``: the same as ``crossover-sgd plot``."""

from crossover_sgd.plotting.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
