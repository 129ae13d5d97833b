"""Data sets (read from disk, never downloaded) and models (small CNN, the MNIST example CNN,
AlexNet for CIFAR-10, torchvision ResNets)."""

from __future__ import annotations

import json
import pickle
import struct
from collections import Counter
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch

from crossover_sgd.config import RESNETS, TrainConfig
from crossover_sgd.errors import ConfigError
from crossover_sgd.training.data import CIFAR10Batches, SyntheticImages, build_datasets, load_digits, preflight_data
from crossover_sgd.training.models import AlexNetCifar, MnistCNN, SmallCNN, build_model, initial_model
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


@pytest.mark.slow
def test_synthetic_data_trains_through_the_command_line(tmp_path):
    out = tmp_path / "out"
    result = cli("train", "--dataset", "synthetic", "--image-size", "8", "--synthetic-samples", "48",
                 "--synthetic-classes", "4", "--batch-size", "8", "--epochs", "2", "--out", str(out), timeout=240)
    assert result.returncode == 0, result.stderr
    rows = read_metrics(out / "metrics_rank0.csv")
    assert [(int(r["epoch"]), int(r["step"])) for r in rows] == [(1, 6), (2, 12)]  # 48 samples / batch 8
    assert all(np.isfinite(float(r["train_loss"])) and 0.0 <= float(r["val_acc"]) <= 1.0 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["config"]["dataset"] == "synthetic"
    step = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    state = torch.load(out / "checkpoints" / f"step{step:08d}" / "rank0.pt", weights_only=True)["model_state"]
    assert state["features.0.weight"].shape[1] == 3 and state["classifier.weight"].shape[0] == 4


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


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _pickle_py2_style(path: Path, content: dict) -> None:
    """Pickle protocol 2 naming ``numpy.core.multiarray``, as in the published CIFAR-10 files."""
    path.write_bytes(pickle.dumps(content, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def write_cifar10(root: Path, per_class: int = 2) -> Dict[str, dict]:
    """CIFAR-10 in its python layout (``per_class`` images of every class in each of the five
    training batches and the test batch), random pixels; returns what each file holds."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(c) for c in rng.permutation(np.repeat(np.arange(10), per_class))]
        batch = {b"batch_label": name.encode(), b"labels": labels,
                 b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8),
                 b"filenames": [f"img{i}.png".encode() for i in range(len(labels))]}
        _pickle_py2_style(folder / name, batch)
        written[name] = batch
    _pickle_py2_style(folder / "batches.meta", {b"label_names": [c.encode() for c in CIFAR_CLASSES],
                                                b"num_cases_per_batch": 10 * per_class, b"num_vis": 3072})
    return written


def test_cifar10_from_a_local_directory(tmp_path):
    written = write_cifar10(tmp_path)
    config = TrainConfig(dataset="cifar10", data_dir=str(tmp_path))
    preflight_data(config)  # no complaint
    bundle = build_datasets(config)
    assert (len(bundle.train), len(bundle.val), bundle.num_classes, bundle.in_channels, bundle.image_size) == \
        (100, 20, 10, 3, 32)
    assert isinstance(bundle.train, CIFAR10Batches)
    assert bundle.train.classes == bundle.val.classes == CIFAR_CLASSES
    assert bundle.train.targets == [y for i in range(1, 6) for y in written[f"data_batch_{i}"][b"labels"]]
    assert bundle.val.targets == written["test_batch"][b"labels"]
    # validation: ToTensor + Normalize of the channel-major 3x32x32 rows, computed by hand
    raw = torch.tensor(written["test_batch"][b"data"][7], dtype=torch.float32).reshape(3, 32, 32) / 255
    expected = (raw - torch.tensor(CIFAR_MEAN).view(3, 1, 1)) / torch.tensor(CIFAR_STD).view(3, 1, 1)
    image, label = bundle.val[7]
    assert label == written["test_batch"][b"labels"][7]
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-5)
    # training: each sample is a random 32x32 crop of the zero-padded (4 px) image, maybe flipped
    torch.manual_seed(0)
    views = [bundle.train[43] for _ in range(8)]  # data_batch_3, image 3
    assert all(label == written["data_batch_3"][b"labels"][3] for _, label in views)
    raw = torch.tensor(written["data_batch_3"][b"data"][3], dtype=torch.float32).reshape(3, 32, 32) / 255
    padded = torch.nn.functional.pad(raw, (4, 4, 4, 4))
    candidates = [(window - torch.tensor(CIFAR_MEAN).view(3, 1, 1)) / torch.tensor(CIFAR_STD).view(3, 1, 1)
                  for source in (padded, padded.flip(2)) for i in range(9) for j in range(9)
                  for window in [source[:, i:i + 32, j:j + 32]]]
    for view, _ in views:
        assert any(torch.allclose(view, c, rtol=0, atol=1e-5) for c in candidates)
    assert any(not torch.equal(view, views[0][0]) for view, _ in views)  # augmented: not one fixed view

def _damage(root: Path, how: str) -> str:
    """Damage the CIFAR-10 directory at ``root``; return the file the error must name."""
    folder = root / "cifar-10-batches-py"
    if how == "truncated":
        data = (folder / "data_batch_3").read_bytes()
        (folder / "data_batch_3").write_bytes(data[: len(data) // 2])
        return "data_batch_3"
    if how == "missing":
        (folder / "test_batch").unlink()
        return "test_batch"
    if how == "no meta":
        (folder / "batches.meta").unlink()
        return "batches.meta"
    batch = pickle.loads((folder / "data_batch_2").read_bytes(), encoding="latin1")
    if how == "wrong shape":
        batch[b"data"] = batch[b"data"][:, :3000]
    elif how == "too few labels":
        batch[b"labels"] = batch[b"labels"][:-1]
    elif how == "label 10":
        batch[b"labels"][0] = 10
    _pickle_py2_style(folder / "data_batch_2", batch)
    return "data_batch_2"


class _Touch:
    """Unpickles into a call of ``open(path, "w")``: a data file that runs code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.mark.parametrize("how", ["truncated", "missing", "no meta", "wrong shape", "too few labels", "label 10"])
def test_damaged_cifar10_files_are_a_one_line_config_error(tmp_path, how):
    write_cifar10(tmp_path)
    name = _damage(tmp_path, how)
    with pytest.raises(ConfigError, match="no readable cifar10 data") as exc:
        build_datasets(TrainConfig(dataset="cifar10", data_dir=str(tmp_path)))
    assert name in str(exc.value) and "never downloads" in str(exc.value) and "\n" not in str(exc.value)


def test_cifar10_files_cannot_run_code(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "code-ran"
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({b"data": _Touch(marker)}))
    with pytest.raises(ConfigError, match="data_batch_1"):
        build_datasets(TrainConfig(dataset="cifar10", data_dir=str(tmp_path)))
    assert not marker.exists()


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


# The parameter-server study's models: digits (8x8x1), MNIST (28x28x1), CIFAR-10 (32x32x3).
STUDY_INPUTS = [(1, 8), (1, 28), (3, 32)]
MNIST_EXAMPLE_PARAMETERS = 1_199_882  # pytorch/examples mnist/main.py: Net()
ALEXNET_CIFAR_PARAMETERS = 23_272_266  # 3 channels, 10 classes


@pytest.mark.parametrize("name,cls", [("mnist_cnn", MnistCNN), ("alexnet_cifar", AlexNetCifar)])
@pytest.mark.parametrize("channels,size", STUDY_INPUTS)
def test_study_models_forward_any_size_and_channels(name, cls, channels, size):
    model = build_model(name, 10, in_channels=channels, image_size=size)
    assert isinstance(model, cls)
    with torch.no_grad():
        logits = model.eval()(torch.randn(3, channels, size, size))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    model.train()(torch.randn(2, channels, size, size)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert build_model(name, 7, channels, size)(torch.randn(1, channels, size, size)).shape == (1, 7)


def test_mnist_cnn_is_the_pytorch_example_on_28x28():
    import torch.nn.functional as F

    model = build_model("mnist_cnn", 10, in_channels=1, image_size=28)
    # the example's parameters: names, shapes, count (independent of the image size)
    assert [(n, tuple(p.shape)) for n, p in model.named_parameters()] == [
        ("conv1.weight", (32, 1, 3, 3)), ("conv1.bias", (32,)), ("conv2.weight", (64, 32, 3, 3)), ("conv2.bias", (64,)),
        ("fc1.weight", (128, 9216)), ("fc1.bias", (128,)), ("fc2.weight", (10, 128)), ("fc2.bias", (10,))]
    assert sum(p.numel() for p in model.parameters()) == MNIST_EXAMPLE_PARAMETERS
    assert sum(p.numel() for p in build_model("mnist_cnn", 10, 1, 8).parameters()) == MNIST_EXAMPLE_PARAMETERS

    def example(x):  # mnist/main.py's Net.forward, without the final log_softmax
        x = F.relu(F.conv2d(x, model.conv1.weight, model.conv1.bias))
        x = F.max_pool2d(F.relu(F.conv2d(x, model.conv2.weight, model.conv2.bias)), 2)
        x = F.dropout(x, 0.25, model.training)
        x = F.dropout(F.relu(F.linear(torch.flatten(x, 1), model.fc1.weight, model.fc1.bias)), 0.5, model.training)
        return F.linear(x, model.fc2.weight, model.fc2.bias)

    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        # the adaptive pooling of a 12x12 map to 12x12 is the identity, bit for bit
        pooled = F.max_pool2d(F.relu(model.conv2(F.relu(model.conv1(x)))), 2)
        assert pooled.shape[-2:] == (12, 12) and torch.equal(model.resize(pooled), pooled)
        assert torch.equal(model.eval()(x), example(x))
        model.train()
        torch.manual_seed(5)
        ours = model(x)
        torch.manual_seed(5)
        assert torch.equal(ours, example(x))  # the same dropout masks, drawn in the same order


def test_alexnet_cifar_is_the_usual_layout_on_32x32():
    model = build_model("alexnet_cifar", 10, in_channels=3, image_size=32).eval()
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (3, 64, (3, 3), (2, 2), (1, 1)), (64, 192, (3, 3), (1, 1), (1, 1)), (192, 384, (3, 3), (1, 1), (1, 1)),
        (384, 256, (3, 3), (1, 1), (1, 1)), (256, 256, (3, 3), (1, 1), (1, 1))]
    linears = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 4096), (4096, 4096), (4096, 10)]
    assert [m.p for m in model.classifier if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    assert sum(p.numel() for p in model.parameters()) == ALEXNET_CIFAR_PARAMETERS
    # On 32x32 the rounding-up pools and the adaptive pooling change nothing: the same network with
    # floor-mode pools and no adaptive pooling gives the same logits, bit for bit.
    reference = torch.nn.Sequential(
        *[torch.nn.MaxPool2d(2) if isinstance(m, torch.nn.MaxPool2d) else m for m in model.features],
        torch.nn.Flatten(), model.classifier).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
        assert model.features(x).shape == (2, 256, 2, 2)


@pytest.mark.parametrize("name", ["mnist_cnn", "alexnet_cifar"])
def test_study_models_initial_weights_follow_the_seed(name):
    def weights(seed):
        torch.manual_seed(seed)
        return build_model(name, 10, 1, 28).state_dict()

    first, again, other = weights(3), weights(3), weights(4)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["features.0.weight" if name == "alexnet_cifar" else "conv1.weight"],
                           other["features.0.weight" if name == "alexnet_cifar" else "conv1.weight"])
    # what every rank builds: initial_model seeds with config.seed itself
    config = TrainConfig(model=name, seed=3)
    built = initial_model(config, 10, 1, 28, torch.device("cpu")).state_dict()
    assert all(torch.equal(first[k], built[k]) for k in first)


@pytest.mark.parametrize("name", ["mnist_cnn", "alexnet_cifar"])
def test_study_models_refuse_the_settings_they_have_no_layers_for(name):
    cases = [
        (dict(norm="group"), f"--norm group needs a ResNet: --model {name} has no normalisation layer to replace "
                             "(use --norm batch)"),
        (dict(drop_rate=0.1), f"--drop-rate 0.1 is invalid with --model {name} ("),
        (dict(last_drop_rate=0.5), f"--last-drop-rate 0.5 is invalid with --model {name} ("),
    ]
    for values, words in cases:
        with pytest.raises(ConfigError) as info:
            TrainConfig(model=name, **values).validate()
        message = info.value.render()
        assert words in message and "\n" not in message, message
        if "norm" not in values:
            flag = words.split()[0]
            assert "dropouts fixed at" in message and message.endswith(f": use {flag} 0"), message
    assert TrainConfig(model=name).validate().model == name


@pytest.mark.slow
def test_mnist_cnn_trains_through_the_command_line(tmp_path):
    out = tmp_path / "out"
    result = cli("train", "--nproc", "1", "--device", "cpu", "--model", "mnist_cnn", "--epochs", "1",
                 "--batch-size", "64", "--lr", "0.05", "--out", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    (row,) = read_metrics(out / "metrics_rank0.csv")
    assert (int(row["epoch"]), int(row["step"])) == (1, 22)  # 1,438 digits / batch 64, the partial batch dropped
    assert np.isfinite(float(row["train_loss"])) and float(row["val_acc"]) > 0.5  # chance: 0.1
    assert json.loads((out / "summary.json").read_text())["config"]["model"] == "mnist_cnn"
    step = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    state = torch.load(out / "checkpoints" / f"step{step:08d}" / "rank0.pt", weights_only=True)["model_state"]
    assert state["conv1.weight"].shape == (32, 1, 3, 3) and state["fc1.weight"].shape == (128, 9216)


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


@pytest.mark.slow
def test_small_cnn_trains_on_cifar10_from_a_local_directory(tmp_path):
    write_cifar10(tmp_path / "data")
    out = tmp_path / "out"
    result = cli("train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--epochs", "1",
                 "--batch-size", "10", "--out", str(out), timeout=240)
    assert result.returncode == 0, result.stderr
    (row,) = read_metrics(out / "metrics_rank0.csv")
    assert int(row["epoch"]) == 1 and int(row["step"]) == 10  # 100 images / batch 10
    assert np.isfinite(float(row["train_loss"])) and float(row["val_acc"]) in {k / 20 for k in range(21)}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["config"]["dataset"] == "cifar10"
    assert summary["steps_per_epoch"] == 10
    state = torch.load(out / "checkpoints" / "step00000010" / "rank0.pt", weights_only=True)["model_state"]
    assert state["features.0.weight"].shape[1] == 3 and state["classifier.weight"].shape[0] == 10
