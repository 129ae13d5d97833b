"""The overlap of OSP is real: its worker computes while its push is in flight, where localSGD's
worker waits.

One server shard and one worker, every server reply leaving ``--ps-delay 0.3`` s late (a slow
link: the delay is a floor on each push's ``latency_s``, from the push to its reply being taken),
one segment (no evaluation or checkpoint before the end). Each row of ``ps/worker_rank1.csv`` is
a push: ``k`` steps, ``latency_s``, and ``wait_s``, the part of the latency the worker spent
blocked rather than computing.

* localSGD pushes after exactly K steps and waits for the reply: every push is blocked for (nearly)
  its whole flight.
* OSP pushes and goes on computing, taking the reply at the first step after it arrived: its
  pushes after the first hold the k > 1 steps computed during the previous flight, and a push whose
  reply came in while computing (every one before the segment's end, which waits on purpose) is
  blocked for a small part of its flight.

``--local-steps`` is large (128) so that the reply arrives before the cap of K steps even on a fast
machine (128 steps of small_cnn take longer than the delay anywhere: about 5 ms each on one core
here), and a loaded machine only makes k smaller (a step would have to take 0.15 s for k < 2).
Waiting is compared with the latency of the same push (half of it), never elapsed time with a
fixed budget.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List

import pytest

from support import child_env, cli

pytestmark = pytest.mark.slow

DELAY_S, K, EPOCHS = 0.3, 128, 12


def run_rows(tmp_path: Path, algorithm: str) -> List[Dict[str, float]]:
    out = tmp_path / algorithm
    result = cli("train", "--nproc", "2", "--algorithm", algorithm, "--ps-delay", str(DELAY_S), "--local-steps",
                 str(K), "--epochs", str(EPOCHS), "--eval-every", str(EPOCHS), "--checkpoint-every", str(EPOCHS),
                 "--workers", "0", "--log-level", "WARNING", "--out", str(out), timeout=300,
                 env=child_env({"CUDA_VISIBLE_DEVICES": ""}))
    assert result.returncode == 0, result.stderr[-3000:]
    with (out / "ps" / "worker_rank1.csv").open(newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def test_an_osp_worker_computes_while_its_push_is_in_flight_and_a_localsgd_worker_waits(tmp_path):
    local, osp = run_rows(tmp_path, "localsgd"), run_rows(tmp_path, "osp")
    for name, rows in (("localsgd", local), ("osp", osp)):
        assert [r["push"] for r in rows] == list(range(len(rows))), (name, rows)
        assert [r["final"] for r in rows] == [0.0] * (len(rows) - 1) + [1.0], (name, rows)  # one segment
        assert all(r["latency_s"] >= DELAY_S for r in rows), (name, rows)  # the delay is a floor
    # localSGD: exactly K steps per push (the final one: the rest), blocked for the whole flight
    assert [r["k"] for r in local[:-1]] == [K] * (len(local) - 1) and len(local) >= 3, local
    for row in local:
        assert row["wait_s"] >= 0.75 * row["latency_s"], row
    # OSP: the first push after K steps; each later one holds the steps computed while the
    # previous one was in flight (more than one, far fewer than K on this small model)
    assert osp[0]["k"] == K, osp[0]
    assert all(2 <= r["k"] <= K for r in osp[1:-1]), osp
    overlapped = osp[:-2]  # replies taken while computing (the last two: the segment's end waits for them)
    assert overlapped, osp
    for row in overlapped:
        assert row["wait_s"] < 0.5 * row["latency_s"], row
    assert sum(r["wait_s"] for r in overlapped) < 0.25 * sum(r["latency_s"] for r in overlapped), overlapped
