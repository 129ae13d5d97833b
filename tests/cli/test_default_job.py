"""The README's first command: the default job with 4 real processes on the embedded data."""

from __future__ import annotations

import json

import pytest

from support import read_metrics

pytestmark = pytest.mark.slow


def test_default_job_reaches_90_percent_with_4_processes_within_2_minutes(default_job):
    """(The run: the session's ``default_job``, ``crossover-sgd train --nproc 4`` in a fresh
    working directory, bounded by 120 s; the LARS test compares with it too.)"""
    result, cwd = default_job
    assert result.returncode == 0, result.stderr
    (out,) = list((cwd / "runs").iterdir())  # the default output directory
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 4 and summary["launcher"] == "local" and summary["status"] == "finished"
    assert all(acc >= 0.90 for acc in summary["final_val_acc"]), summary["final_val_acc"]
    assert 0 < summary["wall_time_s"] < 120
    for rank in range(4):
        rows = read_metrics(out / f"metrics_rank{rank}.csv")
        assert len(rows) == summary["config"]["epochs"]
        assert float(rows[-1]["comm_bytes_sent"]) > 0 and float(rows[-1]["comm_seconds"]) > 0
        assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    log = (out / "train.log").read_text()
    assert "epoch 1/" in log and "done: val_acc per rank" in log
