"""MNIST-1D (``--dataset mnist1d``): a second embedded data set, generated offline, of any size.

MNIST-1D (Greydanus and Kobak, 2020) turns ten 1-D templates of digits into signals of 40
samples by random padding, scaling, translation, correlated and i.i.d. noise and shear. The
``mnist1d`` package (``pip install 'crossover-sgd[mnist1d]'``) generates it from its templates:
no download. It makes the same number of samples of each digit, shuffles them and takes the first
80 % for training, the rest for validation (disjoint by construction: no sample is in both).

Generation takes seconds of CPU (about 2.5 s for 10,000 samples, plus a second to import the
package, which imports matplotlib and SciPy), so the arrays are cached in a file:
``mnist1d-<key>.npz`` in ``--data-dir`` if given, else in ``${XDG_CACHE_HOME:-~/.cache}/crossover-sgd``;
the key is a hash of the sample count, the seed and the package's version. The file is written
atomically under a lock (``fcntl.flock`` on ``mnist1d-<key>.lock`` beside it, left there): the
ranks of a job that start together generate it once, the others wait for it and read it. A cached
file holds exactly the arrays of a fresh generation (float64, as the package makes them).

The package seeds the global ``random`` and ``numpy.random`` generators; their states are restored
after generation, so a caller's random streams are not disturbed.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import random
import zipfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from crossover_sgd.atomic import atomic_write, os_reason, probe_directory
from crossover_sgd.errors import ConfigError

__all__ = ["ARRAYS", "LENGTH", "generate_mnist1d", "mnist1d_arrays", "cache_dir", "cache_path", "check_mnist1d"]

#: The arrays of a generation: training signals (N, 40) and labels, validation signals and labels.
ARRAYS = ("x", "y", "x_test", "y_test")
#: The length of every signal (the package's ``final_seq_length``).
LENGTH = 40
#: Bumped when the cached file's layout changes (part of the key).
_FORMAT = 1
INSTALL = "pip install 'crossover-sgd[mnist1d]' (or pip install mnist1d)"


def _package_version() -> str:
    """The installed ``mnist1d`` version (without importing it); ConfigError if it is missing."""
    if importlib.util.find_spec("mnist1d") is None:
        raise ConfigError(f"{{dataset}} mnist1d needs the mnist1d package, which is not installed: {INSTALL}")
    try:
        return importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError:  # importable, but not installed by pip (a checkout)
        return "unknown"


def cache_dir(data_dir: Optional[str]) -> Path:
    """Where the generated arrays are cached: ``data_dir`` if given, else
    ``${XDG_CACHE_HOME:-~/.cache}/crossover-sgd``."""
    if data_dir:
        return Path(data_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "crossover-sgd"


def cache_path(folder: Path, samples: int, seed: int) -> Path:
    """The cache file of ``samples`` signals made with ``seed`` in ``folder``."""
    key = json.dumps({"samples": samples, "seed": seed, "mnist1d": _package_version(), "format": _FORMAT},
                     sort_keys=True)
    return folder / f"mnist1d-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def generate_mnist1d(samples: int, seed: int) -> Dict[str, np.ndarray]:
    """A fresh generation of ``samples`` signals (the package's default settings, its own 80/20
    split) with ``seed``; the global ``random`` and ``numpy.random`` states are left as they were."""
    _package_version()
    from mnist1d.data import get_dataset_args, make_dataset  # imports matplotlib and SciPy: here only

    args = get_dataset_args()
    args.num_samples, args.seed = samples, seed
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        made = make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return {name: np.ascontiguousarray(made[name]) for name in ARRAYS}


def _read(path: Path, samples: int) -> Optional[Dict[str, np.ndarray]]:
    """The arrays cached in ``path``; None if there is no such file, or if it is not a complete
    cache of ``samples`` signals (then it is made again)."""
    try:
        with np.load(path, allow_pickle=False) as content:
            arrays = {name: content[name] for name in ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing, or not such a file
        return None
    x, y, x_test, y_test = (arrays[name] for name in ARRAYS)
    if (x.ndim != 2 or x_test.ndim != 2 or x.shape[1] != LENGTH or x_test.shape[1] != LENGTH
            or len(x) != len(y) or len(x_test) != len(y_test) or len(x) + len(x_test) != samples):
        return None
    return arrays


def mnist1d_arrays(samples: int, seed: int, data_dir: Optional[str] = None) -> Dict[str, np.ndarray]:
    """The arrays of :func:`generate_mnist1d`, read from the cache (see the module's docstring),
    generated and cached first if they are not there. Safe to call from many processes at once:
    one generates, the others wait and read. ConfigError if the cache cannot be written."""
    folder = cache_dir(data_dir)
    path = cache_path(folder, samples, seed)
    arrays = _read(path, samples)
    if arrays is not None:
        return arrays
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
            arrays = _read(path, samples)  # made by another process while this one waited
            if arrays is None:
                arrays = generate_mnist1d(samples, seed)
                atomic_write(path, lambda handle: np.savez(handle, **arrays))
    except OSError as exc:
        raise _unwritable(folder, data_dir, exc) from None
    return arrays


def check_mnist1d(samples: int, seed: int, data_dir: Optional[str] = None) -> None:
    """The preflight of ``--dataset mnist1d``, writing nothing: the package is installed and the
    arrays are cached or their cache directory can be written. ConfigError otherwise."""
    folder = cache_dir(data_dir)
    if _read(cache_path(folder, samples, seed), samples) is not None:
        return
    try:
        probe_directory(folder)
    except OSError as exc:
        raise _unwritable(folder, data_dir, exc) from None


def _unwritable(folder: Path, data_dir: Optional[str], exc: OSError) -> ConfigError:
    where = f"{{data_dir}} {folder}" if data_dir else f"the MNIST-1D cache {folder}"
    return ConfigError(f"{where}: cannot write the generated data there ({os_reason(exc)}): "
                       "give {data_dir} DIR, a writable directory to cache it in")
