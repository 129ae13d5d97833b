"""Lost ranks of the parameter-server family: the family is synchronous, so a worker or a server
shard that dies (SIGKILL) or freezes (SIGSTOP) mid-run ends the whole run, within a bound, with
one clear line naming it.

Ranks started by hand (torchrun-style variables, each rank's own exit code and stderr), killed
once every worker has written its first row of ``ps/worker_rank*.csv`` (appended and flushed per
push):

* a worker (rank 2 of ``--ps-shards 1``), server shard 1 and server shard 0 (rank 0, which also
  hosts the rendezvous store) of ``--ps-shards 2``: every other rank exits 3 within seconds (a
  closed connection is seen at once), and the job says it once, on the lowest surviving rank's
  stderr: ``crossover-sgd: error: rank R: communication failed: lost peer rank(s) [V]: no
  heartbeat ...`` (for rank 0: ``lost peer rank 0 (it hosts the rendezvous store and no longer
  answers)``).

Under the local launcher (``--nproc 4``):

* a frozen worker (SIGSTOP): it has no heartbeat; it is found after about the timeout (by the
  workers' Gloo group when they are computing, by the shard's link when they wait for a reply:
  the shard then keeps the store up until the workers, waiting for its heartbeat to stop, have
  diagnosed too, about one more timeout); the launcher prints rank 0's line and exits 3 after
  stopping the frozen rank (SIGTERM stays pending on it: SIGKILL after the launcher's grace of
  10 s);
* a killed worker (SIGKILL): the launcher itself sees a rank die by a signal, announces it
  (``rank 2 exited with code -9; stopping the other ranks``) and exits 128 + 9.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from support import (MarkedLauncher, cleanup_ranks as cleanup, csv_rows, finish_ranks, server_family_argv, start_ranks,
                     wait_until)

pytestmark = pytest.mark.slow

WAIT_S = 180  # every wait of these tests is bounded by an event or this
KILL_TIMEOUT_S = 20  # --timeout of the SIGKILL runs: a closed connection does not wait for it
STOP_TIMEOUT_S = 10  # --timeout of the SIGSTOP run: a frozen rank is found after about this long
ERROR = "crossover-sgd: error:"


def start_by_hand(out: Path, algorithm: str, nproc: int, shards: int, timeout: float) -> List[subprocess.Popen]:
    return start_ranks(server_family_argv(out, algorithm, shards, timeout), nproc)


def wait_mid_run(out: Path, workers: Sequence[int], alive) -> None:
    """Until every worker has completed a push (bounded; fails if a rank ended meanwhile)."""
    wait_until(lambda: all(csv_rows(out / "ps" / f"worker_rank{w}.csv") >= 1 for w in workers), alive,
               "a push of every worker", WAIT_S)


def finish(procs: List[subprocess.Popen], survivors: Sequence[int]) -> Dict[int, Tuple[int, str, float]]:
    return finish_ranks(procs, survivors, WAIT_S)


@pytest.mark.parametrize("algorithm,shards,victim,named", [
    ("localsgd", 1, 2, "lost peer rank(s) [2]: no heartbeat"),
    ("osp", 2, 1, "lost peer rank(s) [1]: no heartbeat"),
    ("osp", 2, 0, "lost peer rank 0 (it hosts the rendezvous store and no longer answers)"),
], ids=["worker-rank2", "server-shard1", "server-shard0-store-host"])
def test_a_killed_rank_ends_every_other_rank_with_one_line_naming_it(tmp_path, algorithm, shards, victim, named):
    out, nproc = tmp_path / "run", 4
    procs = start_by_hand(out, algorithm, nproc, shards, KILL_TIMEOUT_S)
    survivors = [r for r in range(nproc) if r != victim]
    try:
        wait_mid_run(out, range(shards, nproc), lambda: all(p.poll() is None for p in procs))
        os.kill(procs[victim].pid, signal.SIGKILL)
        ended = finish(procs, survivors)
    finally:
        cleanup(procs)
    for rank, (code, err, seconds) in ended.items():
        assert code == 3, (rank, code, err[-3000:])  # PEER_FAILURE_EXIT
        assert "Traceback" not in err, (rank, err[-3000:])
        assert seconds <= KILL_TIMEOUT_S + 10, (rank, seconds)  # a closed connection: no timeout to wait for
    lines = {rank: [ln for ln in err.splitlines() if ln.startswith(ERROR)] for rank, (_, err, _) in ended.items()}
    reporter = min(survivors)  # said once for the job, by the lowest rank still alive
    assert [rank for rank, found in lines.items() if found] == [reporter], lines
    (line,) = lines[reporter]
    assert line.startswith(f"{ERROR} rank {reporter}: communication failed: {named}"), line


def launched(out: Path, algorithm: str, nproc: int, timeout: float) -> MarkedLauncher:
    argv = server_family_argv(out, algorithm, 1, timeout)[3:]  # (after python -m crossover_sgd)
    argv[1:1] = ["--nproc", str(nproc)]
    return MarkedLauncher(argv)


def test_a_frozen_worker_ends_the_run_naming_it_within_about_the_timeout(tmp_path):
    out = tmp_path / "run"
    with launched(out, "localsgd", 4, STOP_TIMEOUT_S) as job:
        wait_mid_run(out, (1, 2, 3), job.alive)
        victim = job.rank_pid(2)
        os.kill(victim, signal.SIGSTOP)
        try:
            code, err, seconds = job.end(WAIT_S)
        finally:
            try:
                os.kill(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert code == 3, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("crossover-sgd:")]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"{ERROR} rank 0: communication failed: lost peer rank(s) [2]: no heartbeat"), lines
    # at most about two timeouts (see the module docstring), the launcher's grace of 10 s, slack
    assert seconds <= 2 * STOP_TIMEOUT_S + 10 + 20, seconds
    assert job.left == {}


def test_under_the_launcher_a_killed_worker_is_announced_by_the_launcher(tmp_path):
    out = tmp_path / "run"
    with launched(out, "localsgd", 4, KILL_TIMEOUT_S) as job:
        wait_mid_run(out, (1, 2, 3), job.alive)
        os.kill(job.rank_pid(2), signal.SIGKILL)
        code, err, seconds = job.end(WAIT_S)
    assert code == 128 + signal.SIGKILL, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("crossover-sgd:")]
    # the launcher's line only: the ranks it stops then find their peers gone, and their lines
    # (which would blame the server rank the launcher stopped first) are not printed
    assert lines == ["crossover-sgd: rank 2 exited with code -9; stopping the other ranks"], err[-3000:]
    assert seconds <= 10 + 15, seconds  # the other ranks are stopped (grace 10 s), not left to time out
    assert job.left == {}
