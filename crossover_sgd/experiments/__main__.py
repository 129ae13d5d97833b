"""``python -m crossover_sgd.experiments {scalability,mixing,noniid} ...``: the same as ``crossover-sgd experiment``."""

from crossover_sgd.experiments.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
