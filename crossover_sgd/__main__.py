"""``python -m crossover_sgd`` is the ``crossover-sgd`` console script."""

from crossover_sgd.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
