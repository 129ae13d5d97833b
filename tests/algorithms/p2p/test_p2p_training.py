"""The peer-to-peer family in the training command, as a user runs it: ``crossover-sgd train
--nproc 3 --algorithm pdmm-isvr`` on the default data (a ring, an iid split), per-node outputs,
and a stopped run resumed from each node's own checkpoint equals the uninterrupted run."""

from __future__ import annotations

import csv
import json

import pytest

from support import P2P_TRAINING, cli

pytestmark = pytest.mark.slow

ARGS = ("train", *P2P_TRAINING)
SAME = ("epoch", "train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc", "comm_bytes_sent",
        "live_neighbours")


def node_rows(out, node):
    with (out / "nodes" / f"{node}.csv").open() as handle:
        return [{k: row[k] for k in SAME} for row in csv.DictReader(handle)]


def test_default_run_writes_every_nodes_outputs_and_resumes_exactly(tmp_path, shared_run):
    """(The uninterrupted run: the session's ``shared_run("p2p-pdmm-isvr")``, which
    tests/runtime/test_p2p_launchers.py reads as the local launcher's run.)"""
    whole, parts = shared_run("p2p-pdmm-isvr"), tmp_path / "parts"
    stopped = cli(*ARGS, "--out", str(parts), "--stop-at-step", "20", timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    resumed = cli(*ARGS, "--out", str(parts), "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for node in ("node0", "node1", "node2"):
        rows = node_rows(whole, node)
        assert [int(r["epoch"]) for r in rows] == [1, 2]
        assert float(rows[-1]["test_acc"]) > 0.3  # it learns (10 classes: chance is 0.1)
        assert node_rows(parts, node) == rows  # the same numbers, bit for bit
        summary = json.loads((whole / "nodes" / f"{node}.json").read_text())
        assert summary["status"] == "finished" and summary["node"]["dropped_neighbours"] == []
        assert len(summary["node"]["neighbours"]) == 2
