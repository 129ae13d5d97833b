"""Downpour goes on without lost replicas, the point of the method: a replica killed (SIGKILL) and
another frozen (SIGSTOP) mid-run are dropped by the shard (the frozen one once it has been silent
for ``--timeout`` without a heartbeat); the others and the shard finish with exit code 0 and
complete outputs, the lost replicas listed in the shard's summary and in the lead's. A lost shard
ends every replica with one line naming it.

Ranks started by hand (each rank's own exit code and stderr): 1 shard + 4 replicas."""

from __future__ import annotations

import json
import os
import signal

import pytest

from support import cleanup_ranks, csv_rows, finish_ranks, server_family_argv, start_ranks, wait_until

pytestmark = pytest.mark.slow

NPROC, TIMEOUT_S = 5, 8


def start(out, epochs):
    return start_ranks(server_family_argv(out, "downpour", 1, TIMEOUT_S, ("--epochs", str(epochs))), NPROC)


def mid_run(out, procs):
    wait_until(lambda: all(csv_rows(out / "ps" / f"worker_rank{r}.csv") >= 2 for r in range(1, NPROC)),
               lambda: all(p.poll() is None for p in procs), "two pushes of every replica")


def test_a_killed_and_a_frozen_replica_are_dropped_and_the_others_finish(tmp_path):
    out = tmp_path / "run"
    procs = start(out, 8)  # ~8 x 11 steps per replica: long enough to outlast the frozen replica's timeout
    try:
        mid_run(out, procs)
        os.kill(procs[3].pid, signal.SIGKILL)
        os.kill(procs[4].pid, signal.SIGSTOP)
        ended = finish_ranks(procs, [0, 1, 2])
    finally:
        cleanup_ranks(procs)
    assert {rank: code for rank, (code, _, _) in ended.items()} == {0: 0, 1: 0, 2: 0}, ended
    shard = json.loads((out / "ps" / "shard0.json").read_text())
    assert sorted(shard["lost_replicas"]) == [3, 4]
    assert shard["test_acc"] > 0.5 and sum(shard["staleness_histogram"].values()) == shard["updates"]
    summary = json.loads((out / "summary.json").read_text())  # the lead (rank 1) finished: the run's summary
    assert summary["status"] == "finished" and sorted(summary["trainers"][0]["server"]["lost"]) == [3, 4]
    for rank in (1, 2):  # the survivors trained every step
        node = summary["trainers"][0] if rank == 1 else None
        assert csv_rows(out / "ps" / f"worker_rank{rank}.csv") >= 8 * 11
        if node is not None:
            assert node["steps"] == 8 * 11


def test_a_killed_shard_ends_every_replica_with_a_line_naming_it(tmp_path):
    out = tmp_path / "run"
    procs = start(out, 50)
    try:
        mid_run(out, procs)
        os.kill(procs[0].pid, signal.SIGKILL)
        ended = finish_ranks(procs, range(1, NPROC))
    finally:
        cleanup_ranks(procs)
    for rank, (code, err, seconds) in ended.items():
        assert code == 3, (rank, err[-2000:])
        assert "lost server shard 0 (rank 0)" in err, err[-2000:]
        assert seconds <= 2 * TIMEOUT_S + 10, seconds
