"""``--tensorboard True`` writes rank 0's metrics as TensorBoard scalars."""

from __future__ import annotations

import pytest

from support import cli, read_metrics

pytestmark = pytest.mark.slow


def test_tensorboard_scalars_match_the_metrics_csv(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    result = cli("train", "--nproc", "2", "--epochs", "2", "--tensorboard", "True", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    rows = read_metrics(out / "metrics_rank0.csv")
    accuracy = events.Scalars("val_acc")
    assert [e.step for e in accuracy] == [int(r["step"]) for r in rows]
    assert [e.value for e in accuracy] == pytest.approx([float(r["val_acc"]) for r in rows], rel=1e-6)
    assert {"train_loss", "lr", "comm_bytes_sent", "consensus_distance"} <= set(events.Tags()["scalars"])
