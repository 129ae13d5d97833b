"""crossover-sgd: decentralized large-minibatch data-parallel training for PyTorch.

The communication algorithm is a flag: AllReduce-SGD (baseline), SGP and Crossover-SGD plug into
one training loop through :class:`crossover_sgd.algorithms.Algorithm`.
"""

__version__ = "0.1.0"
