"""The gossip algorithms train on the default data with several real processes, report consensus
and traffic metrics (hierarchical: per-GPU inter-node bytes), and refuse bad gossip input with
one line and nothing written."""

from __future__ import annotations

import json

import pytest

from crossover_sgd.algorithms.gossip.segments import split_model
from crossover_sgd.training.models import build_model
from support import cli, read_metrics
from topology import assign_segments_to_local_ranks

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("nproc,args", [
    (4, ["--algorithm", "sgp"]),
    (4, ["--algorithm", "sgp", "--sgp-overlap", "True", "--sgp-peers", "2"]),
    (4, ["--algorithm", "crossover", "--chromosome", "fine"]),
    (4, ["--algorithm", "crossover", "--chromosome", "fine", "--gossip-overlap", "True"]),
    (8, ["--algorithm", "hierarchical-crossover", "--gpu_per_node", "2", "--segments", "3"]),
], ids=["sgp", "osgp-2peers", "crossover", "crossover-overlap", "hierarchical-8ranks"])
def test_gossip_reaches_90_percent_on_the_default_data(tmp_path, nproc, args):
    out = tmp_path / "run"
    result = cli("train", "--nproc", str(nproc), "--epochs", "10", *args, "--out", str(out), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert all(acc >= 0.90 for acc in summary["final_val_acc"]), summary["final_val_acc"]
    rows = [read_metrics(out / f"metrics_rank{r}.csv") for r in range(nproc)]
    last = [r[-1] for r in rows]
    assert float(last[0]["consensus_val_acc"]) >= 0.90
    assert len({row["consensus_val_acc"] for row in last}) == 1  # one consensus model for all ranks
    assert float(rows[0][0]["consensus_distance"]) > 0  # replicas do differ between rounds
    for row in last:
        assert int(row["comm_bytes_sent"]) > 0 and int(row["comm_bytes_recv"]) > 0
        assert float(row["comm_seconds"]) > 0
        hierarchical = "hierarchical-crossover" in args  # the inter-node columns are 0 for the others
        assert (int(row["inter_node_bytes_sent"]) > 0) == (int(row["inter_node_bytes_recv"]) > 0) == hierarchical


def test_hierarchical_groupnum_run_reports_inter_node_bytes_per_gpu(tmp_path):
    """--groupnum 2 on 4 local ranks: nodes {0, 1} and {2, 3} (logged); the metrics columns
    inter_node_bytes_sent/recv hold each GPU's share of the inter-node stage: steps x the bytes of
    the segments its local rank carries, a node's two GPUs together steps x the model's bytes."""
    out = tmp_path / "run"
    result = cli("train", "--nproc", "4", "--epochs", "1", "--algorithm", "hierarchical-crossover", "--groupnum", "2",
                 "--out", str(out), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hierarchical crossover: 2 nodes of 2 consecutive ranks" in result.stderr
    segments = split_model(build_model("small_cnn", 10, 1, 8), chromosome="fine")
    sizes = [s.nbytes for s in segments]
    owners = assign_segments_to_local_ranks(sizes, 2)
    last = [read_metrics(out / f"metrics_rank{r}.csv")[-1] for r in range(4)]
    steps = int(last[0]["step"])
    for rank, row in enumerate(last):
        share = steps * sum(sizes[s] for s in owners[rank % 2])
        assert int(row["inter_node_bytes_sent"]) == int(row["inter_node_bytes_recv"]) == share > 0
        assert int(row["comm_bytes_sent"]) > share  # comm also counts the intra-node stages
    for node in range(2):
        assert sum(int(row["inter_node_bytes_sent"]) for row in last[2 * node:2 * node + 2]) == steps * sum(sizes)


@pytest.mark.parametrize("args,expected", [
    (["--nproc", "2", "--algorithm", "crossover", "--chromosome", "medium"], "--chromosome 'medium'"),
    (["--nproc", "2", "--algorithm", "crossover", "--segments", "99"], "--segments 99"),
    (["--nproc", "4", "--algorithm", "hierarchical-crossover", "--groupnum", "3"], "--groupnum 3"),
    (["--nproc", "2", "--algorithm", "hierarchical-crossover"], "at least 2 nodes"),
    (["--nproc", "2", "--algorithm", "sgp", "--sgp-peers", "2"], "--sgp-peers 2"),
    (["--nproc", "4", "--algorithm", "sgp", "--sgp-peers", "4"], "use 1 to 3"),
], ids=["chromosome", "segments", "groupnum", "one-node", "k>=n", "k>=n-4"])
def test_bad_gossip_input_is_one_line_and_writes_nothing(call, tmp_path, args, expected):
    """Refused by the launcher before any rank starts (in this process: ``crossover-sgd``'s main)."""
    out = tmp_path / "run"
    code, stderr = call("cli", ["train", *args, "--out", str(out)])
    assert code == 2, stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and expected in errors[0], stderr
    assert "Traceback" not in stderr
    assert not out.exists()
