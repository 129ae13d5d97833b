"""The gossip algorithms train on the default data with several real processes, report consensus
metrics, and refuse bad gossip input with one line and nothing written."""

from __future__ import annotations

import json

import pytest

from support import cli, read_metrics

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
    assert all(int(row["comm_bytes_sent"]) > 0 for row in last)


@pytest.mark.parametrize("args,expected", [
    (["--nproc", "2", "--algorithm", "crossover", "--chromosome", "medium"], "--chromosome 'medium'"),
    (["--nproc", "2", "--algorithm", "crossover", "--segments", "99"], "--segments 99"),
    (["--nproc", "4", "--algorithm", "hierarchical-crossover", "--groupnum", "3"], "--groupnum 3"),
    (["--nproc", "2", "--algorithm", "hierarchical-crossover"], "at least 2 nodes"),
    (["--nproc", "2", "--algorithm", "sgp", "--sgp-peers", "2"], "--sgp-peers 2"),
    (["--nproc", "4", "--algorithm", "sgp", "--sgp-peers", "3"], "only 2 distinct peers"),
], ids=["chromosome", "segments", "groupnum", "one-node", "k>=n", "k>distinct"])
def test_bad_gossip_input_is_one_line_and_writes_nothing(tmp_path, args, expected):
    out = tmp_path / "run"
    result = cli("train", *args, "--out", str(out), timeout=120)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
