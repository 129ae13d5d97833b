"""A peer-to-peer training under each real launcher: the local launcher (``--nproc 3``), torchrun
and MPICH's ``mpiexec``.

One short run each (``--algorithm pdmm-isvr``, one epoch of the default digits data, 3 ranks on
the default ring; the local launcher's: the session's 2-epoch run of ``support.P2P_TRAINING``,
which tests/algorithms/p2p/test_p2p_training.py resumes): exit code 0, and every node's own
outputs, ``OUT/nodes/node{i}.csv`` (the original's columns first, a row per epoch) and
``OUT/nodes/node{i}.json`` (its summary, ``status`` finished). The
launch detection itself is tested in test_launchers.py; Slurm (srun) is tested in tests/hpc,
whose session cluster these tests do not start.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from support import P2P_TRAINING, child_env, installed_program, read_metrics, run, unavailable

pytestmark = pytest.mark.slow

WORLD = 3
LAUNCH_TIMEOUT = 240  # seconds; a launch takes ~15 s on an idle machine
#: The per-node CSV starts with the original code's columns, in its order.
ORIGINAL_COLUMNS = ["epoch", "train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc"]
TRAIN = ("train", "--algorithm", "pdmm-isvr", "--epochs", "1", "--batch-size", "32", "--workers", "0")


def cpu_env() -> Dict[str, str]:
    """``child_env`` with GPUs hidden: three ranks sharing one GPU would not be a valid NCCL job."""
    return child_env({"CUDA_VISIBLE_DEVICES": ""})


def mpiexec() -> str:
    """MPICH's mpiexec (the test extra's wheel, next to this Python); skip (CI: fail) without it."""
    found = installed_program("mpiexec")
    if found is None:
        unavailable("no mpiexec: install the test extra (pip install -e '.[test]' brings the mpich wheel)")
    return str(found)


def command(launcher: str, out: Path) -> List[str]:
    train = [*TRAIN, "--out", str(out)]
    if launcher == "local":
        return [sys.executable, "-m", "crossover_sgd", *train, "--nproc", str(WORLD)]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
                "-m", "crossover_sgd", *train]
    return [mpiexec(), "-n", str(WORLD), sys.executable, "-m", "crossover_sgd", *train]


def check_node(out: Path, rank: int, launcher: str, epochs: int = 1) -> None:
    name = f"node{rank}"
    rows = read_metrics(out / "nodes" / f"{name}.csv")
    with open(out / "nodes" / f"{name}.csv") as handle:
        header = handle.readline().strip().split(",")
    assert header[:len(ORIGINAL_COLUMNS)] == ORIGINAL_COLUMNS, header
    assert [row["epoch"] for row in rows] == [str(e) for e in range(1, epochs + 1)], rows
    for column in ORIGINAL_COLUMNS[1:]:
        value = float(rows[0][column])
        assert math.isfinite(value), (name, column, value)
        if column.endswith("_acc"):
            assert 0.0 <= value <= 1.0, (name, column, value)
    summary = json.loads((out / "nodes" / f"{name}.json").read_text())
    assert summary["status"] == "finished", summary["status"]
    assert (summary["launcher"], summary["world_size"]) == (launcher, WORLD)
    node: Optional[Dict[str, object]] = summary.get("node")
    assert node is not None and (node["node"], node["rank"]) == (name, rank), node
    others = sorted(f"node{r}" for r in range(WORLD) if r != rank)  # a ring of 3: both other nodes
    assert sorted(node["neighbours"]) == sorted(node["live_neighbours"]) == others, node
    assert node["dropped_neighbours"] == [], node


@pytest.mark.parametrize("launcher,detected", [("local", "local"), ("torchrun", "torchrun"), ("mpiexec", "mpich")],
                         ids=["--nproc 3", "torchrun", "mpiexec"])
def test_p2p_training_under_a_launcher(tmp_path, shared_run, launcher, detected):
    if launcher == "local":  # the shared run (exit code 0, or it fails the test): 2 epochs
        out, epochs = shared_run("p2p-pdmm-isvr"), 2
        assert P2P_TRAINING[:2] == ("--nproc", str(WORLD)) and "pdmm-isvr" in P2P_TRAINING
    else:
        out, epochs = tmp_path / "run", 1
        result = run(command(launcher, out), timeout=LAUNCH_TIMEOUT, env=cpu_env(), cwd=tmp_path)
        assert result.returncode == 0, f"{launcher} failed ({result.returncode}):\n{result.stderr[-3000:]}"
    assert sorted(p.name for p in (out / "nodes").iterdir()) == sorted(
        f"node{r}.{ext}" for r in range(WORLD) for ext in ("csv", "json"))
    for rank in range(WORLD):
        check_node(out, rank, detected, epochs)
