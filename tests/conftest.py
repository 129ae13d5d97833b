"""Shared helpers: run the real command line in subprocesses, make small real data sets."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[1]


def child_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The test process's environment without launcher variables, one thread per rank."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_", "MPI_LOCAL", "TORCHELASTIC_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                         "MASTER_ADDR", "MASTER_PORT", "CROSSOVER_SGD_LAUNCHER")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run(args: Sequence[str], *, timeout: float = 300, env: Optional[Dict[str, str]] = None,
        cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run a command to completion (bounded by ``timeout``), capturing text output."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          env=env or child_env(), cwd=cwd or ROOT)


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m crossover_sgd ARGS``."""
    return run([sys.executable, "-m", "crossover_sgd", *args], **kwargs)


def read_metrics(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A tiny ImageNet-style folder: train/ and val/ with 3 classes of 16x16 PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imagefolder"
    for split, count in (("train", 8), ("val", 3)):
        for cls in range(3):
            folder = root / split / f"class{cls}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
                pixels[..., cls] = 255  # each class has one saturated channel
                Image.fromarray(pixels).save(folder / f"img{i}.png")
    return root
