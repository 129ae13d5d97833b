"""``python -m crossover_sgd`` is the ``crossover-sgd`` console script."""

from crossover_sgd.cli import console_main

if __name__ == "__main__":
    console_main()
