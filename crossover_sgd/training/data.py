"""Data sets: the embedded default (8x8 digits), MNIST-1D (generated, :mod:`.mnist1d`),
ImageFolder/ImageNet, CIFAR-10, MNIST, synthetic.

Nothing is ever downloaded: CIFAR-10 and MNIST are read from ``--data-dir`` in torchvision's
layout, ImageNet-style data from ``DIR/train/<class>/*`` and ``DIR/val/<class>/*``. CIFAR-10 is
read by :class:`CIFAR10Batches` (the python-pickle batches, no md5 check, only numpy arrays
unpickled), MNIST by torchvision.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from crossover_sgd.config import TrainConfig
from crossover_sgd.errors import ConfigError
from crossover_sgd.training.mnist1d import LENGTH, check_mnist1d, mnist1d_arrays

__all__ = ["DatasetBundle", "build_datasets", "SyntheticImages", "load_digits", "load_mnist1d", "CIFAR10Batches"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class DatasetBundle:
    """The train and validation sets, and the shape of a sample: ``in_channels`` x ``image_size``
    x ``image_size`` (images), or ``in_channels`` x ``image_size`` (1-D signals: MNIST-1D)."""

    train: Dataset
    val: Dataset
    num_classes: int
    in_channels: int
    image_size: int


class SyntheticImages(Dataset):
    """Random images (deterministic per index) with labels ``index % classes``: for throughput."""

    def __init__(self, length: int, classes: int, channels: int = 3, size: int = 224, seed: int = 0):
        self.length, self.classes, self.shape, self.seed = length, classes, (channels, size, size), seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return torch.randn(self.shape, generator=generator), index % self.classes


def load_digits(val_fraction: float = 0.2) -> Tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package), split
    into a fixed train/validation partition and standardised with the training statistics."""
    pixels, targets = _digits_arrays()
    images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    labels = torch.tensor(targets, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1797))
    n_val = int(len(labels) * val_fraction)
    val_idx, train_idx = order[:n_val], order[n_val:]
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    return TensorDataset(images[train_idx], labels[train_idx]), TensorDataset(images[val_idx], labels[val_idx])


def load_mnist1d(samples: int, seed: int, data_dir: Optional[str] = None) -> Tuple[TensorDataset, TensorDataset]:
    """MNIST-1D's ``samples`` signals made with ``seed`` (cached: :func:`.mnist1d.mnist1d_arrays`),
    80 % for training, 20 % for validation; samples of shape (1, 40), float32."""
    arrays = mnist1d_arrays(samples, seed, data_dir)

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.tensor(x, dtype=torch.float32).unsqueeze(1), torch.tensor(y, dtype=torch.long))

    return tensors(arrays["x"], arrays["y"]), tensors(arrays["x_test"], arrays["y_test"])


def _digits_arrays() -> Tuple[Any, Any]:
    """(pixels 1797 x 64, labels) of scikit-learn's digits, read from the file scikit-learn ships
    (``sklearn/datasets/data/digits.csv.gz``) without importing scikit-learn, whose import (with
    SciPy's) costs about a second of CPU in every rank; through ``sklearn.datasets`` if the file is
    not where it was."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return digits.data, digits.target


def _image_folder(root: Path, size: int) -> Tuple[Dataset, Dataset, int]:
    from torchvision import datasets, transforms

    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalize])
    val_tf = transforms.Compose([transforms.Resize(max(size, round(size * 256 / 224))),
                                 transforms.CenterCrop(size), transforms.ToTensor(), normalize])
    _check_split_folders(root, scan=False)
    try:
        train = datasets.ImageFolder(str(root / "train"), train_tf)
        val = datasets.ImageFolder(str(root / "val"), val_tf)
    except (FileNotFoundError, RuntimeError) as exc:
        raise ConfigError(f"--data-dir {root}: no images found ({str(exc).splitlines()[0]})") from None
    if train.classes != val.classes:
        raise ConfigError(f"--data-dir {root}: train/ has {len(train.classes)} classes but val/ has "
                          f"{len(val.classes)}; they must hold the same class folders")
    return train, val, len(train.classes)


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file cannot run code."""

    ALLOWED = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                         ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> Dict[str, Any]:
    """A CIFAR batch file as a dict with ``str`` keys (python 2 and 3 pickles alike); ValueError
    naming the file if it is missing or not such a pickle."""
    try:
        with open(path, "rb") as handle:
            content = _NumpyUnpickler(handle, encoding="latin1").load()
    except FileNotFoundError:
        raise ValueError(f"{path.name} is missing") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{path.name} is damaged ({type(exc).__name__}: {exc})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path.name} is damaged (not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}


class CIFAR10Batches(Dataset):
    """CIFAR-10 from its python layout: ``DIR/cifar-10-batches-py/data_batch_1..5`` (train) or
    ``test_batch``, pickled dicts of ``data`` (uint8, N x 3072, channel-major 32x32) and
    ``labels``, and ``batches.meta`` (``label_names``). Samples are ``(transform(PIL image),
    label)`` as in ``torchvision.datasets.CIFAR10``. ValueError, naming the file, if one is
    missing or malformed."""

    TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
    TEST_FILES = ("test_batch",)

    def __init__(self, root: Path, train: bool, transform: Optional[Callable] = None):
        folder = Path(root) / _LAYOUTS["cifar10"]
        names = _load_pickle(folder / "batches.meta").get("label_names")
        if not (isinstance(names, list) and len(names) == 10):
            raise ValueError("batches.meta: label_names is not a list of 10 names")
        self.classes: List[str] = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        images, self.targets = [], []
        for name in self.TRAIN_FILES if train else self.TEST_FILES:
            batch = _load_pickle(folder / name)
            data, labels = batch.get("data"), batch.get("labels")
            if not isinstance(data, np.ndarray) or not isinstance(labels, list):
                raise ValueError(f"{name}: no 'data' array and 'labels' list")
            if not all(isinstance(x, (int, np.integer)) for x in labels):
                raise ValueError(f"{name}: labels are not integers")
            labels = [int(x) for x in labels]
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
                raise ValueError(f"{name}: data {data.dtype} {data.shape} with {len(labels)} labels, "
                                 "expected uint8 (N, 3072) with N labels")
            if labels and not 0 <= min(labels) <= max(labels) < 10:
                raise ValueError(f"{name}: labels outside 0..9")
            images.append(data)
            self.targets.extend(labels)
        self.data = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # N, H, W, C
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        from PIL import Image

        image = Image.fromarray(self.data[index])
        return (self.transform(image) if self.transform is not None else image), self.targets[index]


def _cifar_or_mnist(name: str, root: Path) -> Tuple[Dataset, Dataset]:
    from torchvision import datasets, transforms

    try:
        if name == "cifar10":
            normalize = transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
            train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                           transforms.ToTensor(), normalize])
            val_tf = transforms.Compose([transforms.ToTensor(), normalize])
            return CIFAR10Batches(root, train=True, transform=train_tf), CIFAR10Batches(root, train=False,
                                                                                        transform=val_tf)
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
        return (datasets.MNIST(str(root), train=True, transform=tf, download=False),
                datasets.MNIST(str(root), train=False, transform=tf, download=False))
    except (RuntimeError, AssertionError, ValueError, OSError, EOFError) as exc:  # missing, or damaged files
        raise _no_data(name, root, str(exc).splitlines()[0] if name == "cifar10" and str(exc) else "") from None


#: Where each set's files lie below ``--data-dir`` (torchvision's layout).
_LAYOUTS = {"cifar10": "cifar-10-batches-py", "mnist": "MNIST/raw"}


def _no_data(name: str, root: Path, detail: str = "") -> ConfigError:
    return ConfigError(f"--data-dir {root}: no readable {name} data found (expected {root}/{_LAYOUTS[name]}/; "
                       "crossover-sgd never downloads data)" + (f": {detail[:200]}" if detail else ""))


def default_workers(local_ranks: int, cores: Optional[int] = None, most: int = 4) -> int:
    """Data-loading workers per rank that the machine has room for: the cores left per local rank
    after the rank's own process, at most ``most`` (0 on a 2-core machine running 2 or more ranks)."""
    cores = cores if cores is not None else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    return max(0, min(most, cores // max(local_ranks, 1) - 1))


def build_datasets(config: TrainConfig) -> DatasetBundle:
    """The train and validation sets ``config`` asks for; ConfigError if they cannot be read."""
    name = config.dataset
    if name == "digits":
        train, val = load_digits()
        return DatasetBundle(train, val, 10, 1, 8)
    if name == "mnist1d":
        train, val = load_mnist1d(config.mnist1d_samples, config.mnist1d_seed, config.data_dir)
        return DatasetBundle(train, val, 10, 1, LENGTH)
    if name == "synthetic":
        size = config.image_size or 224
        return DatasetBundle(SyntheticImages(config.synthetic_samples, config.synthetic_classes, 3, size, seed=1),
                             SyntheticImages(max(64, config.synthetic_samples // 8), config.synthetic_classes, 3,
                                             size, seed=2),
                             config.synthetic_classes, 3, size)
    root = Path(str(config.data_dir)).expanduser()
    if not root.is_dir():
        raise ConfigError(f"--data-dir {root} does not exist or is not a directory")
    if name in ("imagefolder", "imagenet"):
        size = config.image_size or 224
        train, val, classes = _image_folder(root, size)
        return DatasetBundle(train, val, classes, 3, size)
    train, val = _cifar_or_mnist(name, root)
    return DatasetBundle(train, val, 10, 3 if name == "cifar10" else 1, 32 if name == "cifar10" else 28)


def _has_image(folder: Path) -> bool:
    """True as soon as one file with an image extension is found below ``folder``."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    for _root, _dirs, files in os.walk(folder):
        if any(f.lower().endswith(IMG_EXTENSIONS) for f in files):
            return True
    return False


def preflight_data(config: TrainConfig) -> None:
    """Cheap checks of ``--data-dir`` (no full scan), run once before local ranks start."""
    if config.dataset in ("digits", "synthetic"):
        return
    if config.dataset == "mnist1d":
        check_mnist1d(config.mnist1d_samples, config.mnist1d_seed, config.data_dir)
        return
    root = Path(str(config.data_dir)).expanduser()
    if not root.is_dir():
        raise ConfigError(f"--data-dir {root} does not exist or is not a directory")
    if config.dataset in ("imagefolder", "imagenet"):
        _check_split_folders(root, scan=True)
        train, val = (sorted(e.name for e in os.scandir(root / s) if e.is_dir()) for s in ("train", "val"))
        if train != val:
            raise ConfigError(f"--data-dir {root}: train/ has {len(train)} class folders and val/ has "
                              f"{len(val)}, not the same ones; they must hold the same class folders")
    elif config.dataset in _LAYOUTS and not (root / _LAYOUTS[config.dataset]).is_dir():
        raise _no_data(config.dataset, root)


def _check_split_folders(root: Path, scan: bool) -> None:
    """``root/train`` and ``root/val`` exist (and, with ``scan``, each holds an image)."""
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise ConfigError(f"--data-dir {root}: no '{split}' folder inside "
                              "(expected DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg)")
        if scan and not _has_image(root / split):
            raise ConfigError(f"--data-dir {root}: no images found under {split}/")
