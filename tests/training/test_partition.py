"""Each trainer's part of the training set (``--partition iid|noniid|dirichlet``): disjoint,
deterministic in the seed, the original peer-to-peer code's non-IID rule, validation held out
with the node's class mix, ``--train-data-length`` caps; labels read without any image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_digits
from torch.utils.data import Subset

from crossover_sgd.config import TrainConfig
from crossover_sgd.errors import ConfigError
from crossover_sgd.flags import train_config
from crossover_sgd.training.data import CIFAR10Batches, SyntheticImages, build_datasets, load_digits
from crossover_sgd.training.partition import (NodeSplit, class_histogram, dataset_labels, node_parts, node_split,
                                              node_splits, noniid_classes)

PARTITIONS = ("iid", "noniid", "dirichlet")


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """scikit-learn's digits labels: 1,797 samples of 10 classes."""
    return sklearn_digits().target


def balanced(per_class: int = 1000, classes: int = 10) -> np.ndarray:
    return np.repeat(np.arange(classes), per_class)


@pytest.mark.parametrize("partition", PARTITIONS)
@pytest.mark.parametrize("nodes", [1, 3, 8])
def test_splits_are_disjoint_sorted_and_cover_the_parts(digits, partition, nodes):
    config = TrainConfig(partition=partition, seed=3)
    parts = node_parts(digits, nodes, config)
    splits = node_splits(digits, nodes, config)
    everything = np.concatenate(parts)
    assert len(np.unique(everything)) == len(everything)  # disjoint across nodes
    if partition != "noniid" or nodes > 1:  # noniid: one node holds 8 of the 10 classes only
        assert len(everything) == len(digits)
    for part, split in zip(parts, splits):
        assert isinstance(split, NodeSplit)
        assert split.train.dtype == np.int64 and split.val.dtype == np.int64
        assert (np.diff(split.train) > 0).all() and (np.diff(split.val) > 0).all()
        assert not np.intersect1d(split.train, split.val).size  # train and val disjoint
        assert np.array_equal(np.union1d(split.train, split.val), part)  # no cap: the whole part


def test_noniid_nodes_hold_exactly_the_rule_s_classes(digits):
    nodes = 8
    held = noniid_classes(10, nodes, seed=5)
    # the shuffled class order, read back from nodes 0 (positions 0..7) and 1 (positions 4..11 mod 10)
    order = np.concatenate([held[0], held[1][4:6]])
    assert sorted(order) == list(range(10))
    for k in range(nodes):
        assert np.array_equal(held[k], order[(4 * k + np.arange(8)) % 10])
    splits = node_splits(digits, nodes, TrainConfig(partition="noniid", seed=5))
    for k, split in enumerate(splits):
        for indices in (split.train, split.val):
            present = np.flatnonzero(class_histogram(digits, indices, 10))
            assert set(present) == set(held[k].tolist())
    assert any(not np.array_equal(noniid_classes(10, 2, seed)[0], held[0]) for seed in range(6, 10))


@pytest.mark.parametrize("classes, held", [(10, 8), (5, 4), (3, 2), (2, 2), (1, 1), (20, 16)])
def test_noniid_class_count(classes, held):
    for node_classes in noniid_classes(classes, 4, seed=0):
        assert len(node_classes) == held == len(set(node_classes.tolist()))


def test_noniid_shares_are_within_the_rule():
    """Each class goes to its holders in proportion to shares in [0.8, 1.0]."""
    labels = balanced(per_class=10_000)
    config = TrainConfig(partition="noniid", seed=1, local_val_fraction=0.0)
    parts = node_parts(labels, 8, config)
    held = noniid_classes(10, 8, seed=1)
    for c in range(10):
        holders = [k for k in range(8) if c in held[k]]
        counts = np.array([class_histogram(labels, parts[k], 10)[c] for k in holders])
        assert counts.sum() == 10_000
        h = len(holders)
        low, high = 0.8 / (0.8 + (h - 1) * 1.0), 1.0 / (1.0 + (h - 1) * 0.8)
        assert (counts >= np.floor(low * 10_000)).all() and (counts <= np.ceil(high * 10_000)).all()
        if h > 1:
            assert counts.max() / counts.min() <= 1.0 / 0.8 + 1e-3


@pytest.mark.parametrize("partition", PARTITIONS)
def test_splits_depend_on_the_seed_only(digits, partition):
    first = node_splits(digits, 4, TrainConfig(partition=partition, seed=11))
    again = node_splits(digits, 4, TrainConfig(partition=partition, seed=11, lr=0.5, batch_size=7))
    other = node_splits(digits, 4, TrainConfig(partition=partition, seed=12))
    for a, b in zip(first, again):
        assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert any(not np.array_equal(a.train, b.train) for a, b in zip(first, other))
    for node in range(4):  # one node's split is its part of the whole, computed by any rank
        single = node_split(digits, node, 4, TrainConfig(partition=partition, seed=11))
        assert np.array_equal(single.train, first[node].train) and np.array_equal(single.val, first[node].val)


def test_iid_part_sizes_within_one(digits):
    for nodes in (2, 3, 7, 16):
        sizes = [len(p) for p in node_parts(digits, nodes, TrainConfig(partition="iid"))]
        assert sum(sizes) == len(digits) and max(sizes) - min(sizes) <= 1


def test_dirichlet_large_alpha_is_about_uniform_small_alpha_is_skewed():
    labels = balanced(per_class=4000)
    even = node_parts(labels, 4, TrainConfig(partition="dirichlet", dirichlet_alpha=1e5))
    for part in even:
        assert np.allclose(class_histogram(labels, part, 10), 1000, rtol=0.05)
    skewed = node_parts(labels, 4, TrainConfig(partition="dirichlet", dirichlet_alpha=0.05))
    shares = np.array([class_histogram(labels, part, 10) for part in skewed]) / 4000
    assert shares.max() > 0.9  # some node holds most of some class


def test_validation_keeps_the_node_s_class_mix(digits):
    config = TrainConfig(partition="noniid", local_val_fraction=0.25, seed=2)
    for part, split in zip(node_parts(digits, 3, config), node_splits(digits, 3, config)):
        assert len(split.val) == int(0.25 * len(part))
        expected = 0.25 * class_histogram(digits, part, 10)
        assert np.abs(class_histogram(digits, split.val, 10) - expected).max() < 1.5
    for split in node_splits(digits, 3, TrainConfig(partition="iid", local_val_fraction=0.0)):
        assert len(split.val) == 0


def test_train_data_length_caps_each_node(digits):
    base = TrainConfig(partition="iid", seed=4)
    full = node_splits(digits, 3, base)
    capped = node_splits(digits, 3, TrainConfig(partition="iid", seed=4, train_data_length=100))
    roomy = node_splits(digits, 3, TrainConfig(partition="iid", seed=4, train_data_length=10_000))
    for whole, cap, room in zip(full, capped, roomy):
        assert len(cap.train) == 100 and np.isin(cap.train, whole.train).all()
        assert np.array_equal(cap.val, whole.val)  # the validation set is not capped
        assert np.array_equal(room.train, whole.train)


def test_a_node_without_training_samples_is_a_config_error(digits):
    with pytest.raises(ConfigError) as info:
        node_splits(digits[:5], 8, TrainConfig(partition="iid"))
    message = info.value.render()
    assert "--partition iid" in message and "node 5 of 8" in message and "0 of the 5" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="--dirichlet-alpha"):
        node_splits(digits[:20], 16, TrainConfig(partition="dirichlet", dirichlet_alpha=0.01))


def test_shard_is_not_a_fixed_split(digits):
    with pytest.raises(ValueError, match="ShardSampler"):
        node_split(digits, 0, 2, TrainConfig())
    with pytest.raises(ValueError, match="node 2"):
        node_split(digits, 2, 2, TrainConfig(partition="iid"))


def test_labels_are_read_without_images(image_folder, monkeypatch):
    train, _ = load_digits()
    assert np.array_equal(dataset_labels(train), train.tensors[1].numpy())
    synthetic = SyntheticImages(25, 7, size=8)
    monkeypatch.setattr(SyntheticImages, "__getitem__", lambda self, i: pytest.fail("read an image"))
    assert np.array_equal(dataset_labels(synthetic), np.arange(25) % 7)
    folder = build_datasets(TrainConfig(dataset="imagefolder", data_dir=str(image_folder), image_size=16)).train
    folder.loader = lambda path: pytest.fail("read an image")
    assert np.array_equal(dataset_labels(folder), np.repeat(np.arange(3), 8))
    cifar = CIFAR10Batches.__new__(CIFAR10Batches)  # the labels of its batch files, without the images
    cifar.targets = [3, 1, 4, 1, 5]
    assert dataset_labels(cifar).tolist() == [3, 1, 4, 1, 5]
    assert dataset_labels(Subset(synthetic, [3, 9, 10])).tolist() == [3, 2, 3]
    tensor_targets = type("MNISTLike", (), {"targets": torch.tensor([2, 0, 1])})()
    assert dataset_labels(tensor_targets).dtype == np.int64
    with pytest.raises(TypeError, match="labels"):
        dataset_labels(object())


def test_partition_flags_and_their_checks():
    config = train_config(["--partition", "noniid", "--train_data_length", "500", "--local-val-fraction", "0.2"])
    assert (config.partition, config.train_data_length, config.local_val_fraction) == ("noniid", 500, 0.2)
    assert train_config(["--dirichlet_alpha", "2"]).dirichlet_alpha == 2.0
    assert TrainConfig().partition == "shard" and TrainConfig().train_data_length is None
    for bad, words in ((dict(partition="random"), "--partition 'random'"), (dict(dirichlet_alpha=0.0), "> 0"),
                       (dict(train_data_length=0), "--train-data-length 0"),
                       (dict(local_val_fraction=0.6), "0 <= value <= 0.5")):
        with pytest.raises(ConfigError, match=words.replace("+", r"\+")):
            TrainConfig(**bad).validate()
    unused = TrainConfig(dirichlet_alpha=2.0, train_data_length=10).validate().ineffective_options()
    assert unused == ["--dirichlet-alpha 2 (only --partition dirichlet uses it, not shard)",
                      "--train-data-length 10 (--partition shard splits the data by rank; only the other partitions "
                      "use it)"]
