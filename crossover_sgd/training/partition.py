"""Each trainer's ("node's") own part of the training set, for ``--partition`` other than ``shard``.

``shard`` (the default) is the :class:`~crossover_sgd.training.sampler.ShardSampler`: one shared
permutation per epoch, read by rank. The other partitions give node ``k`` of ``n`` a fixed,
disjoint part of the training set, the peer-to-peer family's setting:

* ``iid``: a seeded random split into ``n`` parts (sizes within 1);
* ``noniid``: the original peer-to-peer code's rule. The ``C`` classes are shuffled; node ``k``
  holds ``m = max(1, round(0.8 C))`` consecutive classes of that order (cyclically) from position
  ``4k mod C`` (:func:`noniid_classes`); for each class, every node holding it draws a share
  uniformly in [0.8, 1.0], and the class's samples are divided among those nodes in proportion to
  their shares;
* ``dirichlet``: for each class, the nodes' shares are drawn from Dirichlet(``dirichlet_alpha``).

Of its part a node holds out ``local_val_fraction`` (class by class, so with its data's class mix)
as its own validation set, and trains on the rest, at most ``train_data_length`` samples of it
(drawn at random). Everything depends on ``config.seed`` only: every rank computes every node's
split identically, without communication.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from crossover_sgd.config import TrainConfig
from crossover_sgd.errors import ConfigError
from crossover_sgd.training.data import SyntheticImages

__all__ = ["NodeSplit", "node_split", "node_splits", "node_parts", "noniid_classes", "class_histogram",
           "dataset_labels"]

#: The noniid rule: the fraction of the classes each node holds, the shift between consecutive
#: nodes' first classes, and the range of the per-class shares.
NONIID_CLASS_FRACTION, NONIID_SHIFT, NONIID_SHARES = 0.8, 4, (0.8, 1.0)
# Independent random streams derived from the seed.
_CLASS_ORDER, _SPLIT, _NODE = 1, 2, 3


@dataclass
class NodeSplit:
    """One node's training and validation samples: sorted int64 indices into the training set."""

    train: np.ndarray
    val: np.ndarray


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed % 2 ** 64, *stream]))


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """``total`` as integer counts in proportion to ``weights`` (each within 1 of its exact share)."""
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    bounds = np.rint(cumulative / cumulative[-1] * total).astype(np.int64)
    bounds[-1] = total
    return np.diff(bounds, prepend=0)


def class_histogram(labels: np.ndarray, indices: np.ndarray, num_classes: int) -> np.ndarray:
    """The number of samples of each class among ``indices`` (for reports)."""
    return np.bincount(np.asarray(labels)[np.asarray(indices, dtype=np.int64)], minlength=num_classes)


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """The label of every sample of a data set of :mod:`crossover_sgd.training.data`, as int64,
    without reading any image (TypeError for a data set whose labels are not at hand)."""
    if isinstance(dataset, SyntheticImages):
        return np.arange(len(dataset), dtype=np.int64) % dataset.classes
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].cpu().numpy().astype(np.int64)
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    targets = getattr(dataset, "targets", None)  # CIFAR10Batches, ImageFolder, torchvision's MNIST
    if targets is None:
        raise TypeError(f"the labels of a {type(dataset).__name__} are not at hand (no targets attribute)")
    return torch.as_tensor(targets).cpu().numpy().astype(np.int64)


def noniid_classes(num_classes: int, nodes: int, seed: int) -> List[np.ndarray]:
    """The classes each node holds under ``noniid``: ``max(1, round(0.8 C))`` consecutive classes
    of a seeded shuffle of the ``C`` classes, cyclically, node ``k``'s from position ``4k mod C``."""
    order = _rng(seed, _CLASS_ORDER).permutation(num_classes)
    held = max(1, round(NONIID_CLASS_FRACTION * num_classes))
    return [order[(NONIID_SHIFT * k + np.arange(held)) % num_classes] for k in range(nodes)]


def node_parts(labels: np.ndarray, nodes: int, config: TrainConfig,
               num_classes: Optional[int] = None) -> List[np.ndarray]:
    """Every node's whole part (sorted indices, disjoint) under ``config.partition``; ``num_classes``
    defaults to the largest label + 1."""
    labels = np.asarray(labels, dtype=np.int64)
    if config.partition == "shard":
        raise ValueError("partition shard is the trainer's ShardSampler, not a fixed split")
    if nodes < 1:
        raise ValueError(f"nodes={nodes}: need at least one node")
    rng = _rng(config.seed, _SPLIT)
    if config.partition == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), nodes)]
    classes = num_classes if num_classes is not None else int(labels.max(initial=-1)) + 1
    holders: List[List[int]] = [[] for _ in range(classes)]
    if config.partition == "noniid":
        for node, held in enumerate(noniid_classes(classes, nodes, config.seed)):
            for c in held:
                holders[c].append(node)
    elif config.partition == "dirichlet":
        holders = [list(range(nodes)) for _ in range(classes)]
    else:
        raise ValueError(f"unknown partition {config.partition!r}")
    chunks: List[List[np.ndarray]] = [[] for _ in range(nodes)]
    for c in range(classes):
        if not holders[c]:
            continue  # a class no node holds (noniid with few nodes) is left out
        if config.partition == "noniid":
            shares = rng.uniform(*NONIID_SHARES, size=len(holders[c]))
        else:
            shares = rng.dirichlet(np.full(nodes, config.dirichlet_alpha))
        members = rng.permutation(np.flatnonzero(labels == c))
        counts = _apportion(len(members), shares)
        for node, chunk in zip(holders[c], np.split(members, np.cumsum(counts)[:-1])):
            chunks[node].append(chunk)
    return [np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64) for parts in chunks]


def _split_node(labels: np.ndarray, part: np.ndarray, node: int, config: TrainConfig) -> NodeSplit:
    """Node ``node``'s validation samples (``local_val_fraction`` of its part, class by class) and
    training samples (the rest, capped at ``train_data_length``)."""
    rng = _rng(config.seed, _NODE, node)
    held_out = int(config.local_val_fraction * len(part))  # rounded down: at least half stays for training
    val = np.zeros(0, np.int64)
    if held_out:
        part_labels = labels[part]
        classes, counts = np.unique(part_labels, return_counts=True)
        val = np.concatenate([rng.choice(part[part_labels == c], size=k, replace=False)
                              for c, k in zip(classes, _apportion(held_out, counts))])
    train = np.setdiff1d(part, val)
    if config.train_data_length is not None and len(train) > config.train_data_length:
        train = rng.choice(train, size=config.train_data_length, replace=False)
    return NodeSplit(np.sort(train).astype(np.int64), np.sort(val).astype(np.int64))


def node_splits(labels: np.ndarray, nodes: int, config: TrainConfig,
                num_classes: Optional[int] = None) -> List[NodeSplit]:
    """Every node's split (see the module); ConfigError if a node gets no training sample."""
    labels = np.asarray(labels, dtype=np.int64)
    parts = node_parts(labels, nodes, config, num_classes)
    splits = [_split_node(labels, part, node, config) for node, part in enumerate(parts)]
    for node, (part, split) in enumerate(zip(parts, splits)):
        if len(split.train) == 0:
            hint = " or a larger {dirichlet_alpha}" if config.partition == "dirichlet" else ""
            raise ConfigError(f"{{partition}} {config.partition} leaves node {node} of {nodes} no training sample "
                              f"(its part: {len(part)} of the {len(labels)} training samples): "
                              f"use fewer nodes{hint}")
    return splits


def node_split(labels: np.ndarray, node: int, nodes: int, config: TrainConfig,
               num_classes: Optional[int] = None) -> NodeSplit:
    """Node ``node``'s split of ``nodes``: the same on every rank (all nodes' splits are computed
    and checked, so every rank raises the same ConfigError)."""
    if not 0 <= node < nodes:
        raise ValueError(f"node {node} is not one of 0..{nodes - 1}")
    return node_splits(labels, nodes, config, num_classes)[node]
