"""Data sets (read from disk, never downloaded) and models (small CNN, torchvision ResNets)."""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from crossover_sgd.config import RESNETS, TrainConfig
from crossover_sgd.errors import ConfigError
from crossover_sgd.training.data import SyntheticImages, build_datasets, load_digits, preflight_data
from crossover_sgd.training.models import SmallCNN, build_model
from support import cli, read_metrics


# ----------------------------------------------------------------------------- digits
def test_digits_split_sizes_and_standardisation():
    train, val = load_digits()
    assert (len(train), len(val)) == (1438, 359)  # 1,797 images, 20 % held out
    x, y = train.tensors
    assert x.shape == (1438, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.long
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-5  # training statistics
    assert abs(val.tensors[0].mean().item()) < 0.1  # same transform: close, not exact
    assert set(y.tolist()) == set(range(10)) and set(val.tensors[1].tolist()) == set(range(10))


def test_digits_split_is_a_fixed_partition_without_overlap():
    from sklearn.datasets import load_digits as sklearn_digits

    train, val = load_digits()
    again_train, again_val = load_digits()
    assert torch.equal(train.tensors[0], again_train.tensors[0]) and torch.equal(val.tensors[1], again_val.tensors[1])
    # Undo the standardisation: pixel values are k/16 for k = 0..16, an arithmetic progression.
    low, high = train.tensors[0].min(), train.tensors[0].max()

    def samples(ds):
        levels = torch.round((ds.tensors[0] - low) / (high - low) * 16).to(torch.int64)
        return Counter((tuple(img.flatten().tolist()), int(label)) for img, label in zip(levels, ds.tensors[1]))

    digits = sklearn_digits()
    full = Counter((tuple(img.astype(np.int64).flatten().tolist()), int(label))
                   for img, label in zip(digits.images, digits.target))
    train_set, val_set = samples(train), samples(val)
    assert train_set + val_set == full  # every original sample exactly once, in one of the two splits
    duplicated = {key for key, n in full.items() if n > 1}
    assert not (set(train_set) & set(val_set)) - duplicated  # no sample in both (save true duplicates)


def test_digits_through_build_datasets():
    bundle = build_datasets(TrainConfig())
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (10, 1, 8)
    assert (len(bundle.train), len(bundle.val)) == (1438, 359)


# ----------------------------------------------------------------------------- image folders
def test_image_folder_loads(image_folder):
    bundle = build_datasets(TrainConfig(dataset="imagefolder", data_dir=str(image_folder), image_size=16))
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (3, 3, 16)
    assert (len(bundle.train), len(bundle.val)) == (24, 9)
    assert bundle.train.classes == bundle.val.classes == ["class0", "class1", "class2"]
    image, label = bundle.val[4]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == 1
    assert sorted(Counter(bundle.train.targets).values()) == [8, 8, 8]
    # the saturated channel survives the (normalised) validation transform
    assert int(torch.stack([bundle.val[i][0].mean((1, 2)) for i in range(3)]).mean(0).argmax()) == 0
    preflight_data(TrainConfig(dataset="imagenet", data_dir=str(image_folder)))  # no complaint


def test_image_folder_imagenet_name_and_default_size(image_folder):
    bundle = build_datasets(TrainConfig(dataset="imagenet", data_dir=str(image_folder)))
    assert bundle.image_size == 224 and bundle.train[0][0].shape == (3, 224, 224)


def test_image_folder_class_mismatch_is_found_without_loading(image_folder):
    (image_folder / "val" / "class2").rename(image_folder / "val" / "class9")
    config = TrainConfig(dataset="imagefolder", data_dir=str(image_folder), image_size=16)
    with pytest.raises(ConfigError, match="same class folders"):
        preflight_data(config)
    with pytest.raises(ConfigError, match="same class folders"):
        build_datasets(config)


def test_image_folder_without_val_images(image_folder):
    for png in (image_folder / "val").rglob("*.png"):
        png.unlink()
    config = TrainConfig(dataset="imagefolder", data_dir=str(image_folder), image_size=16)
    with pytest.raises(ConfigError, match="no images found"):
        preflight_data(config)
    with pytest.raises(ConfigError, match="no images found"):
        build_datasets(config)


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_per_index():
    data = SyntheticImages(100, 7, channels=3, size=12, seed=3)
    a, label = data[42]
    b, label_again = data[42]
    assert a.shape == (3, 12, 12) and torch.equal(a, b) and label == label_again == 42 % 7
    assert not torch.equal(a, data[43][0])
    assert not torch.equal(a, SyntheticImages(100, 7, channels=3, size=12, seed=4)[42][0])
    assert torch.equal(a, SyntheticImages(100, 7, channels=3, size=12, seed=3)[42][0])  # a fresh object too
    assert len(data) == 100


def test_synthetic_through_build_datasets():
    bundle = build_datasets(TrainConfig(dataset="synthetic", synthetic_samples=80, synthetic_classes=5,
                                        image_size=20))
    assert (len(bundle.train), len(bundle.val), bundle.num_classes, bundle.image_size) == (80, 64, 5, 20)
    assert bundle.train[3][0].shape == (3, 20, 20)
    assert not torch.equal(bundle.train[3][0], bundle.val[3][0])  # different seeds per split


# ----------------------------------------------------------------------------- cifar10 / mnist
@pytest.mark.parametrize("dataset,layout", [("cifar10", "cifar-10-batches-py"), ("mnist", "MNIST/raw")])
def test_torchvision_sets_are_never_downloaded(tmp_path, dataset, layout):
    root = tmp_path / "data"
    root.mkdir()
    config = TrainConfig(dataset=dataset, data_dir=str(root))
    with pytest.raises(ConfigError) as exc:
        build_datasets(config)
    assert f"{root}/{layout}" in str(exc.value) and "never downloads" in str(exc.value)
    with pytest.raises(ConfigError, match=layout):
        preflight_data(config)
    assert list(root.iterdir()) == []  # nothing fetched, nothing created
    with pytest.raises(ConfigError, match="does not exist"):
        build_datasets(TrainConfig(dataset=dataset, data_dir=str(tmp_path / "missing")))


def write_mnist(root: Path, train: int = 20, test: int = 10) -> None:
    """MNIST in torchvision's raw layout (idx files), with random pixels."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def test_mnist_from_a_local_directory(tmp_path):
    write_mnist(tmp_path)
    bundle = build_datasets(TrainConfig(dataset="mnist", data_dir=str(tmp_path)))
    assert (len(bundle.train), len(bundle.val), bundle.num_classes, bundle.in_channels, bundle.image_size) == \
        (20, 10, 10, 1, 28)
    image, label = bundle.train[13]
    assert image.shape == (1, 28, 28) and label == 3


@pytest.mark.parametrize("damage", ["garbage", "empty", "short"])
def test_damaged_mnist_files_are_a_config_error(tmp_path, damage):
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"garbage", "empty": b"", "short": data[:500]}[damage])
    with pytest.raises(ConfigError, match="no readable mnist data"):
        build_datasets(TrainConfig(dataset="mnist", data_dir=str(tmp_path)))


# ----------------------------------------------------------------------------- models
def test_small_cnn():
    model = build_model("small_cnn", 10, in_channels=1, image_size=8)
    assert isinstance(model, SmallCNN)
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    assert build_model("small_cnn", 5, in_channels=3, image_size=32)(torch.randn(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_forward_keeps_torchvision_names(name):
    torch.manual_seed(0)
    model = build_model(name, 7, in_channels=3, image_size=32).eval()
    children = [child for child, _ in model.named_children()]
    for expected in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"):
        assert expected in children
    assert model.fc.out_features == 7
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)  # the small-input stem
    assert isinstance(model.maxpool, torch.nn.Identity)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 32, 32))
    assert logits.shape == (1, 7) and torch.isfinite(logits).all()


def test_resnet18_keeps_imagenet_stem_for_large_images():
    model = build_model("resnet18", 1000, in_channels=3, image_size=224)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, torch.nn.MaxPool2d)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


@pytest.mark.parametrize("image_size", [28, 96])
def test_resnet18_one_channel_input(image_size):
    model = build_model("resnet18", 10, in_channels=1, image_size=image_size)
    assert model.conv1.in_channels == 1
    assert model.conv1.kernel_size == ((3, 3) if image_size < 64 else (7, 7))
    model.train()
    out = model(torch.randn(2, 1, image_size, image_size))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert model.conv1.weight.grad is not None


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="vgg16"):
        build_model("vgg16", 10)


# ----------------------------------------------------------------------------- a real run
@pytest.mark.slow
def test_resnet18_trains_on_an_image_folder(tmp_path, image_folder):
    out = tmp_path / "out"
    result = cli("train", "--dataset", "imagefolder", "--data-dir", str(image_folder), "--model", "resnet18",
                 "--image-size", "16", "--epochs", "1", "--batch-size", "4", "--out", str(out), timeout=240)
    assert result.returncode == 0, result.stderr
    (row,) = read_metrics(out / "metrics_rank0.csv")
    assert int(row["epoch"]) == 1 and int(row["step"]) == 6  # 24 images / batch 4
    assert np.isfinite(float(row["train_loss"])) and 0.0 <= float(row["val_acc"]) <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps_per_epoch"] == 6
    assert summary["config"]["model"] == "resnet18" and summary["config"]["dataset"] == "imagefolder"
    assert (out / "checkpoints" / "latest.json").is_file()
