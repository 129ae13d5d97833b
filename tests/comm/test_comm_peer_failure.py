"""A peer SIGKILLed during an average over a group of consecutive ranks: its partner's average
raises the one lost-peer error, naming the group's ranks, within the process-group timeout;
ranks of the other group are not disturbed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from crossover_sgd.runtime.launch import free_port
from support import ROOT, child_env

pytestmark = pytest.mark.slow
N, VICTIM, PARTNER = 4, 3, 2
TIMEOUT_S = 8.0
WORKER = ROOT / "tests" / "comm" / "comm_ranks.py"


def test_killed_peer_raises_peer_error_naming_the_group(tmp_path):
    port = free_port()
    procs = []
    try:
        for rank in range(N):  # started by hand (torchrun-style variables): no launcher stops the others
            env = child_env({"RANK": str(rank), "WORLD_SIZE": str(N), "LOCAL_RANK": str(rank),
                             "LOCAL_WORLD_SIZE": str(N), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
            procs.append(subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), "kill", str(TIMEOUT_S)],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{r}").exists() for r in range(N)):  # every group averaged once
            assert time.monotonic() < deadline, "the ranks did not get ready"
            assert all(p.poll() is None for p in procs), [p.stderr.read()[-2000:] for p in procs if p.poll()]
            time.sleep(0.05)
        assert [float((tmp_path / f"ready{r}").read_text()) for r in range(N)] == [0.5, 0.5, 2.5, 2.5]
        os.kill(procs[VICTIM].pid, signal.SIGKILL)
        killed = time.monotonic()
        try:
            code = procs[PARTNER].wait(timeout=2 * TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"rank {PARTNER} still waits {2 * TIMEOUT_S:.0f} s after its peer was killed")
        took = time.monotonic() - killed
        assert code == 3, procs[PARTNER].stderr.read()[-2000:]
        assert took < 2 * TIMEOUT_S
        message = (tmp_path / "error2.txt").read_text()
        assert message.startswith("test average with peer rank(s) [2, 3] failed on rank 2: "
                                  "a peer died or stopped answering ("), message
        assert "\n" not in message
        (tmp_path / "stop").write_text("")
        for rank in (0, 1):  # the other group was never disturbed
            assert procs[rank].wait(timeout=60) == 0, procs[rank].stderr.read()[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
