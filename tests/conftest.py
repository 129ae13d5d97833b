"""Shared fixtures: small real data sets made on the fly."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence, Tuple

import pytest

#: glibc's resolver asks again after 1 s instead of 5 s (2 attempts, as by default), in this process
#: and every process the tests start (they inherit it). The DNS server of the machines this suite
#: runs on (a sandbox's resolver) leaves about one query in 50 unanswered, and torch.distributed
#: looks up a name for every new TCPStore connection, on both sides (a reverse lookup of
#: ::ffff:127.0.0.1, which /etc/hosts does not answer): about one connection in 25 (process groups,
#: heartbeats, every rank of every run) stood still for 5 s. Nothing a test checks depends on it.
os.environ.setdefault("RES_OPTIONS", "timeout:1 attempts:2")


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


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory):
    """``shared_run(name)``: the output folder of a real training run that several test modules
    read (``support.shared_run_argv``), run once per session on first use; a failed run fails
    every test that asks for it (without running it again)."""
    from support import cli, shared_run_argv

    base = tmp_path_factory.mktemp("shared-runs")
    done = {}

    def get(name: str) -> Path:
        if name not in done:
            out = base / name
            result = cli("train", *shared_run_argv(name), "--out", str(out), timeout=600)
            done[name] = (out, None if result.returncode == 0 else
                          f"shared run {name} exited {result.returncode}:\n{result.stderr[-3000:]}")
        out, failure = done[name]
        if failure:
            pytest.fail(failure, pytrace=False)
        return out

    return get


@pytest.fixture(scope="session")
def default_job(tmp_path_factory):
    """The README's first command, ``crossover-sgd train --nproc 4`` (the installed console script,
    the default job: 20 epochs of small_cnn on the digits, AllReduce-SGD), run once per session in
    a fresh working directory: (the finished process, its working directory). The default-job
    test checks it as the user sees it; the large-batch LARS test compares its accuracy with it
    (the same run as ``train --nproc 4 --epochs 20``)."""
    from support import child_env, installed_program, run

    script = installed_program("crossover-sgd")
    assert script is not None, "the console script is not installed: pip install -e ."
    cwd = tmp_path_factory.mktemp("default-job")
    return run([script, "train", "--nproc", "4"], cwd=cwd, timeout=120, env=child_env()), cwd


@pytest.fixture
def call(monkeypatch, capsys, tmp_path) -> Callable[..., Tuple[int, str]]:
    """``call(entry, argv)``: an entry point (``"cli"``: ``crossover-sgd``, else ``imagenet_test.py``)
    called in this process as if it were the command line: no launcher variables, a scratch
    working directory (left empty); returns (exit code, stderr). For input refused before any
    rank starts: no interpreter to start, the same ``main(argv)`` the console scripts call."""
    from support import child_env

    clean = child_env()
    for key in list(os.environ):
        if key not in clean:
            monkeypatch.delenv(key)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def invoke(entry: str, argv: Sequence[str]) -> Tuple[int, str]:
        from crossover_sgd import cli as cli_module
        from crossover_sgd import legacy
        from support import ROOT

        capsys.readouterr()
        try:
            if entry == "cli":
                code = cli_module.main(list(argv))
            else:
                code = legacy.main(list(argv), script=str(ROOT / "imagenet_test.py"))
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
        return code, capsys.readouterr().err

    yield invoke
    root.handlers[:] = handlers  # the worker installs its own rank-tagged handler
    root.setLevel(level)
    assert list(workdir.iterdir()) == [], "something was written to the working directory"
