"""A peer that dies (SIGKILL) or stops answering (SIGSTOP) ends every other rank of a 4-rank
crossover run within twice the process-group timeout, with one clear error naming it for the
whole job (from the lowest rank still alive)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from crossover_sgd.runtime.launch import free_port
from support import child_env

pytestmark = pytest.mark.slow
TIMEOUT_S = 8.0


def start_ranks(out, world=4):
    port = free_port()
    procs = []
    for rank in range(world):  # started by hand (torchrun-style variables): no launcher cleans up for us
        env = child_env({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                         "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "crossover_sgd", "train", "--algorithm", "crossover", "--epochs", "500",
             "--timeout", str(TIMEOUT_S), "--out", str(out)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 120
    while not (out / "metrics_rank0.csv").exists():  # training is under way
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "run did not start"
        time.sleep(0.2)
    return procs


def wait_all(procs, survivors, limit):
    """Seconds each survivor took to exit after the fault (None if it outlived ``limit``)."""
    start, took = time.monotonic(), {}
    while len(took) < len(survivors) and time.monotonic() - start < limit:
        for rank in survivors:
            if rank not in took and procs[rank].poll() is not None:
                took[rank] = time.monotonic() - start
        time.sleep(0.1)
    return took


@pytest.mark.parametrize("victim,fault", [(2, signal.SIGKILL), (1, signal.SIGSTOP), (0, signal.SIGKILL)],
                         ids=["kill-rank2", "freeze-rank1", "kill-rank0-store-host"])
def test_lost_peer_ends_every_rank_with_a_clear_error(tmp_path, victim, fault):
    procs = start_ranks(tmp_path / "run")
    survivors = [r for r in range(len(procs)) if r != victim]
    try:
        time.sleep(1.0)
        os.kill(procs[victim].pid, fault)
        took = wait_all(procs, survivors, limit=2 * TIMEOUT_S)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert sorted(took) == survivors, f"ranks still running after {2 * TIMEOUT_S:.0f} s: " \
                                      f"{sorted(set(survivors) - set(took))}"
    stderr = {rank: procs[rank].stderr.read() for rank in survivors}
    for rank in survivors:
        assert procs[rank].returncode == 3, (rank, stderr[rank][-2000:])
    # said once for the whole job (by the lowest rank still alive), not once per surviving rank
    lines = [ln for rank in survivors for ln in stderr[rank].splitlines() if ln.startswith("crossover-sgd: error:")]
    assert len(lines) == 1, {rank: text[-1500:] for rank, text in stderr.items()}
    assert lines[0] in stderr[min(survivors)], lines
    assert f"rank {victim}" in lines[0] or f"[{victim}]" in lines[0], lines[0]
    assert "lost peer" in lines[0], lines[0]
