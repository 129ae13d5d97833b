"""A run stopped mid-epoch and resumed from its checkpoint ends exactly like an uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch

from support import cli, read_metrics

pytestmark = pytest.mark.slow

ARGS = ["train", "--nproc", "2", "--epochs", "3", "--batch-size", "32", "--local-itr", "1",
        "--lr-schedule", "poly", "--poly-hold-epochs", "1", "--warmup-epochs", "0.5", "--seed", "5"]
IGNORED = {"wall_time_s", "comm_seconds"}  # timings differ between runs; everything else may not


def final_params(out, rank):
    step = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    return torch.load(out / "checkpoints" / f"step{step:08d}" / f"rank{rank}.pt", weights_only=True)


@pytest.mark.parametrize("algorithm", [
    [],  # allreduce (DDP)
    # gossip whose segments (parameters, BatchNorm statistics and momentum) live in flat buffers
    ["--algorithm", "crossover", "--segments", "3", "--gossip-momentum", "True", "--gossip-buffers", "True"],
], ids=["allreduce", "crossover-momentum-buffers"])
def test_stop_mid_epoch_and_resume_equals_uninterrupted(tmp_path, algorithm):
    args = [*ARGS, *algorithm]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert cli(*args, "--out", str(whole)).returncode == 0

    stopped = cli(*args, "--out", str(split), "--stop-at-step", "30")  # 22 steps per epoch: mid-epoch 2
    assert stopped.returncode == 0, stopped.stderr
    summary = json.loads((split / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["steps_done"] == 30
    assert len(read_metrics(split / "metrics_rank0.csv")) == 1

    resumed = cli(*args, "--out", str(split), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((split / "summary.json").read_text())["status"] == "finished"

    for rank in range(2):
        expected = read_metrics(whole / f"metrics_rank{rank}.csv")
        got = read_metrics(split / f"metrics_rank{rank}.csv")
        assert len(got) == len(expected) == 3
        for row_got, row_expected in zip(got, expected):
            for column in row_expected.keys() - IGNORED:
                assert row_got[column] == row_expected[column], (rank, column, row_got, row_expected)
        a, b = final_params(whole, rank), final_params(split, rank)
        assert a["step"] == b["step"] == 66
        for name, tensor in a["model_state"].items():
            assert torch.equal(tensor, b["model_state"][name]), name
        for key, state in a["optimizer"]["state"].items():
            assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    out = tmp_path / "run"
    one_epoch = ["train", "--epochs", "2", "--batch-size", "64", "--out", str(out)]
    assert cli(*one_epoch).returncode == 0
    before = (out / "metrics_rank0.csv").read_text()
    again = cli(*one_epoch, "--resume")
    assert again.returncode == 0, again.stderr
    assert (out / "metrics_rank0.csv").read_text() == before
