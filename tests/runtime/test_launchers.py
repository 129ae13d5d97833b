"""Real launches: the local launcher (``--nproc``), torchrun and ``mpiexec`` from the MPICH wheel.

Every rank runs ``crossover-sgd launch-info`` (or a short training) and reports what it
detected; the tests check those reports. Every launch is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from support import (MarkedLauncher, child_env, cli, installed_program, kill_marked, marked_processes, read_metrics,
                     run, unavailable, wait_until)

pytestmark = pytest.mark.slow

LAUNCH_TIMEOUT = 120  # seconds; a launch-info takes ~5-10 s here
PROC = Path("/proc")


MPIEXEC = installed_program("mpiexec")  # the MPICH wheel's, next to this Python


@pytest.fixture
def needs_mpiexec() -> None:
    """MPICH's mpiexec must exist (skip with the reason here; a failure under CI)."""
    if MPIEXEC is None:
        unavailable("no mpiexec: install the test extra (pip install -e '.[test]' brings the mpich wheel)")


@pytest.fixture
def needs_proc() -> None:
    """/proc must list the launcher's child processes and their environments."""
    if not (PROC / "self" / "environ").exists():
        unavailable("needs /proc to find the launcher's child processes")


def cpu_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """``child_env`` with GPUs hidden: these tests are about launchers, and several ranks
    sharing one GPU would not be a valid NCCL job on a one-GPU machine."""
    return child_env({"CUDA_VISIBLE_DEVICES": "", **(extra or {})})


def launch_table(args: List[str], json_path: Path) -> List[Dict[str, object]]:
    """Run a launch; on success return the table rank 0 wrote to ``json_path``."""
    result = run(args, timeout=LAUNCH_TIMEOUT, env=cpu_env())
    assert result.returncode == 0, f"{args} failed ({result.returncode}):\n{result.stderr[-3000:]}"
    table = json.loads(json_path.read_text())
    # rank 0 also prints one JSON line per rank on stdout
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert printed == table
    return table


def assert_one_rendezvous(table: List[Dict[str, object]]) -> None:
    endpoints = {(row["master_addr"], row["master_port"]) for row in table}
    assert len(endpoints) == 1, endpoints
    addr, port = endpoints.pop()
    assert addr and isinstance(port, int) and 0 < port < 65536


def test_local_launcher_three_ranks(tmp_path):
    out = tmp_path / "table.json"
    table = launch_table([sys.executable, "-m", "crossover_sgd", "launch-info", "--nproc", "3",
                          "--json", str(out)], out)
    assert [row["rank"] for row in table] == [0, 1, 2]
    for row in table:
        assert row["launcher"] == "local"
        assert row["world_size"] == 3
        assert row["local_rank"] == row["launcher_local_rank"] == row["rank"]
        assert row["local_size"] == row["launcher_local_size"] == 3
        assert row["node_id"] == row["launcher_node_id"] == 0
        assert (row["device"], row["backend"]) == ("cpu", "gloo")
        assert row["master_addr"] == "127.0.0.1"
    assert_one_rendezvous(table)


def test_gpu_per_node_overrides_the_local_launchers_placement(tmp_path):
    out = tmp_path / "table.json"
    table = launch_table([sys.executable, "-m", "crossover_sgd", "launch-info", "--nproc", "4",
                          "--gpu_per_node", "2", "--json", str(out)], out)
    assert [row["rank"] for row in table] == [0, 1, 2, 3]
    for row in table:
        rank = row["rank"]
        assert (row["local_rank"], row["local_size"], row["node_id"]) == (rank % 2, 2, rank // 2)
        # what the launcher itself said is unchanged: 4 ranks on one node
        launcher_view = (row["launcher_local_rank"], row["launcher_local_size"], row["launcher_node_id"])
        assert launcher_view == (rank, 4, 0)
    assert_one_rendezvous(table)


def test_torchrun(tmp_path):
    out = tmp_path / "table.json"
    table = launch_table([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "-m", "crossover_sgd", "launch-info", "--json", str(out)], out)
    assert [row["rank"] for row in table] == [0, 1]
    for row in table:
        assert row["launcher"] == "torchrun"
        assert row["world_size"] == 2
        assert row["local_rank"] == row["launcher_local_rank"] == row["rank"]
        assert row["local_size"] == 2
        assert row["node_id"] == 0
    assert_one_rendezvous(table)


@pytest.mark.usefixtures("needs_mpiexec")
def test_mpiexec(tmp_path):
    out = tmp_path / "table.json"
    table = launch_table([MPIEXEC, "-n", "4", sys.executable, "-m", "crossover_sgd", "launch-info",
                          "--json", str(out)], out)
    assert [row["rank"] for row in table] == [0, 1, 2, 3]
    for row in table:
        assert row["launcher"] == "mpich"
        assert row["world_size"] == 4
        assert row["local_rank"] == row["launcher_local_rank"] == row["rank"]
        assert row["local_size"] == 4
        assert row["node_id"] == 0
    assert_one_rendezvous(table)
    # Nobody set MASTER_ADDR: rank 0 broadcast its host name through mpi4py (the loopback
    # fallback would read 127.0.0.1).
    assert table[0]["master_addr"] == table[0]["host"]
    assert table[0]["master_addr"] != "127.0.0.1"


def check_two_rank_training(out: Path, launcher: str) -> None:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["launcher"] == launcher
    assert summary["world_size"] == 2
    rows = [read_metrics(out / f"metrics_rank{rank}.csv") for rank in (0, 1)]
    assert [[r["epoch"] for r in ranks] for ranks in rows] == [["1", "2"], ["1", "2"]]
    # AllReduce keeps the replicas identical: both ranks evaluate the same model
    assert [r["val_acc"] for r in rows[0]] == [r["val_acc"] for r in rows[1]]
    assert [r["val_loss"] for r in rows[0]] == [r["val_loss"] for r in rows[1]]
    assert summary["final_val_acc"][0] == summary["final_val_acc"][1] == float(rows[0][-1]["val_acc"])
    assert float(rows[0][-1]["val_acc"]) > 0.5  # it learned something (10 classes)


def test_training_under_torchrun(tmp_path):
    out = tmp_path / "run"
    result = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                  "-m", "crossover_sgd", "train", "--epochs", "2", "--out", str(out)],
                 timeout=240, env=cpu_env())
    assert result.returncode == 0, result.stderr[-3000:]
    check_two_rank_training(out, "torchrun")


@pytest.mark.usefixtures("needs_mpiexec")
def test_training_under_mpiexec(tmp_path):
    out = tmp_path / "run"
    result = run([MPIEXEC, "-n", "2", sys.executable, "-m", "crossover_sgd", "train", "--epochs", "2",
                  "--out", str(out)], timeout=240, env=cpu_env())
    assert result.returncode == 0, result.stderr[-3000:]
    check_two_rank_training(out, "mpich")


# --------------------------------------------------------------------------------------------
# The local launcher when something goes wrong
# --------------------------------------------------------------------------------------------



@pytest.mark.usefixtures("needs_proc")
def test_local_launcher_stops_the_other_ranks_when_one_dies():
    """Rank 1 is killed while rank 0 waits for it at the rendezvous (a wait of up to 120 s):
    the launcher must stop rank 0, report rank 1's death and exit 128 + 9, leaving no process."""
    with MarkedLauncher(["launch-info", "--nproc", "2"], env=cpu_env(), stdout=subprocess.PIPE) as job:
        os.kill(job.rank_pid(1), signal.SIGKILL)
        code, stderr, elapsed = job.end(60)
    assert code == 128 + signal.SIGKILL, stderr
    assert "rank 1 exited with code -9; stopping the other ranks" in stderr
    assert elapsed < 30  # rank 0 was stopped, not left to time out
    assert job.left == {}


@pytest.mark.usefixtures("needs_proc")
def test_local_launcher_exits_non_zero_when_every_rank_fails():
    """``--backend nccl`` on a CPU-only run: every rank refuses it; the launcher prints the
    refusal once and exits 2."""
    marker = uuid.uuid4().hex
    try:
        result = cli("launch-info", "--nproc", "2", "--backend", "nccl", timeout=LAUNCH_TIMEOUT,
                     env=cpu_env({"CROSSOVER_SGD_TEST_MARKER": marker}))
    finally:
        left = kill_marked(marker)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    refusal = "crossover-sgd: error: --backend nccl needs GPUs, but this run is on the CPU: use --backend gloo"
    assert lines == [refusal]  # once, from the lowest rank; no launcher line of its own
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert left == {}


def test_world_size_that_disagrees_with_nproc_is_rejected(tmp_path):
    result = cli("train", "--world_size", "3", "--nproc", "2", "--out", str(tmp_path / "run"), timeout=60,
                 env=cpu_env())
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["crossover-sgd: error: --world_size 3 disagrees with --nproc 2"]
    assert not (tmp_path / "run").exists()


_REPORTING_RANK = """
import os, sys, time
from pathlib import Path
from crossover_sgd.runtime.local_launcher import report_line
rank, marker = int(os.environ["RANK"]), Path(sys.argv[1])
if rank == 0:
    report_line("crossover-sgd: error: rank 0's own line")
    marker.touch()
    time.sleep(120)  # still running when rank 1 exits: the launcher stops it
else:
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    report_line("crossover-sgd: error: rank 1's line")
    sys.exit(2)
"""


def test_local_launcher_prints_the_lowest_ranks_line_even_if_it_stops_that_rank(tmp_path, capfd):
    """Rank 0 has written its line but not yet exited when rank 1 exits with bad input: the
    launcher stops rank 0 (its exit code becomes -15), yet rank 0's line is the one printed, by
    the exit code rank 0 announced with it."""
    from crossover_sgd.runtime.local_launcher import launch_local

    code = launch_local(2, [sys.executable, "-c", _REPORTING_RANK, str(tmp_path / "written")], grace_s=5)
    assert code == 2
    assert capfd.readouterr().err.splitlines() == ["crossover-sgd: error: rank 0's own line"]


@pytest.mark.usefixtures("needs_proc")
def test_a_killed_launcher_takes_its_ranks_with_it(tmp_path):
    """The launcher itself is killed (SIGKILL: it cannot stop its ranks) in the middle of a long
    run: its ranks end too (the parent-death signal), within seconds, instead of training on or
    waiting for their peers forever."""
    with MarkedLauncher(["train", "--nproc", "2", "--epochs", "200", "--workers", "0", "--out", str(tmp_path / "run")],
                        env=cpu_env()) as job:
        job.rank_pid(0), job.rank_pid(1)  # both ranks started
        job.process.kill()
        job.process.wait(timeout=30)
        wait_until(lambda: not marked_processes(job.marker), lambda: True, "the end of the killed launcher's ranks",
                   wait_s=30)
    assert job.left == {}
