"""The gossip family's round clock and hierarchical Crossover-SGD's checkpoints.

* Every gossip algorithm indexes its schedule by its own round counter (``algorithm.round``,
  advanced once per round, saved in ``state_dict()["round"]`` and restored by
  ``load_state_dict``), not by the traffic counter ``comm.rounds``, which still counts the rounds
  for the reports (4 real Gloo processes).
* A hierarchical run stopped mid-epoch and resumed equals an uninterrupted run bit for bit:
  metrics (the inter-node columns included), parameters, momentum and the saved round.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from crossover_sgd.runtime.local_launcher import launch_local
from support import cli, read_metrics

pytestmark = pytest.mark.slow

N = 4
WORKER = Path(__file__).with_name("gossip_round_clock.py")
ROUNDS, TAMPERED = 4, 1000  # as in the worker
VARIANTS = {
    "hierarchical": {"algorithm": "hierarchical-crossover", "groupnum": 2, "segments": 3, "gossip_momentum": True},
    "crossover": {"algorithm": "crossover", "segments": 3},
    "crossover-overlap": {"algorithm": "crossover", "segments": 2, "gossip_overlap": True},
    "sgp": {"algorithm": "sgp", "sgp_peers": 2},
}


@pytest.fixture(scope="module")
def clocks(tmp_path_factory):
    out = tmp_path_factory.mktemp("clock")
    assert launch_local(N, [sys.executable, str(WORKER), str(out), json.dumps(VARIANTS)]) == 0
    return {name: [torch.load(out / name / f"rank{r}.pt") for r in range(N)] for name in VARIANTS}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_schedules_follow_the_round_counter_not_the_traffic_counter(clocks, variant):
    for rank, got in enumerate(clocks[variant]):
        assert got["asked"] == list(range(ROUNDS)), (rank, got)  # one query per round, by the round counter
        assert got["round"] == got["state_round"] == ROUNDS
        assert got["comm_rounds"] == TAMPERED + ROUNDS - ROUNDS // 2  # still counts every round
        assert got["asked_after_load"] == [ROUNDS]  # the restored clock
        assert got["round_after_load"] == ROUNDS + 1
        assert got["comm_rounds_after_load"] == got["comm_rounds"] + 1


ARGS = ["train", "--nproc", str(N), "--epochs", "2", "--batch-size", "32", "--local-itr", "1", "--seed", "5",
        "--lr-schedule", "poly", "--poly-hold-epochs", "1", "--warmup-epochs", "0.5",
        "--algorithm", "hierarchical-crossover", "--groupnum", "2", "--segments", "3",
        "--gossip-momentum", "True", "--gossip-buffers", "True"]
IGNORED = {"wall_time_s", "comm_seconds"}  # timings differ between runs


def last_checkpoint(out: Path, rank: int) -> dict:
    step = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    return torch.load(out / "checkpoints" / f"step{step:08d}" / f"rank{rank}.pt", weights_only=True)


def test_hierarchical_stop_mid_epoch_and_resume_equals_uninterrupted(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    done = cli(*ARGS, "--out", str(whole), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = last_checkpoint(whole, 0)["step"]
    stop = steps // 2 + steps // 4  # mid-epoch 2
    stopped = cli(*ARGS, "--out", str(split), "--stop-at-step", str(stop), timeout=240)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert last_checkpoint(split, 0)["algorithm_state"]["round"] == stop
    resumed = cli(*ARGS, "--out", str(split), "--resume", timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for rank in range(N):
        expected, got = read_metrics(whole / f"metrics_rank{rank}.csv"), read_metrics(split / f"metrics_rank{rank}.csv")
        assert len(got) == len(expected) == 2
        for row_got, row_expected in zip(got, expected):
            for column in row_expected.keys() - IGNORED:
                assert row_got[column] == row_expected[column], (rank, column)
        assert int(expected[-1]["inter_node_bytes_sent"]) > 0
        a, b = last_checkpoint(whole, rank), last_checkpoint(split, rank)
        assert a["step"] == b["step"] == steps
        assert a["algorithm_state"]["round"] == b["algorithm_state"]["round"] == steps
        assert a["algorithm_state"]["comm"]["rounds"] == b["algorithm_state"]["comm"]["rounds"] == steps
        for name, tensor in a["model_state"].items():
            assert torch.equal(tensor, b["model_state"][name]), (rank, name)
        for key, state in a["optimizer"]["state"].items():
            assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])
