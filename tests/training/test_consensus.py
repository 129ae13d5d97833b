"""Consensus metrics with real Gloo processes (3 ranks): the averaged model holds the mean of the
replicas' parameters and floating-point buffers, the consensus distance is
(1/n) sum_i ||x_i - mean||^2 over the parameters, and the training loop's ``consensus_val_acc`` is
the accuracy of the averaged model."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from crossover_sgd.config import TrainConfig
from crossover_sgd.runtime.local_launcher import launch_local
from crossover_sgd.training.data import build_datasets
from crossover_sgd.training.models import build_model
from support import ROOT, read_metrics

pytestmark = pytest.mark.slow
N = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("consensus")
    assert launch_local(N, [sys.executable, str(ROOT / "tests" / "workers" / "consensus_replicas.py"), str(out)]) == 0
    return out


def test_known_replicas_average_and_distance(run):
    """Rank i holds base + i * delta: the average is base + delta (n = 3), buffers included, and
    the distance is (1/3)(1 + 0 + 1) ||delta||^2 over the parameters (buffers not counted)."""
    states = [torch.load(run / "known" / f"rank{r}.pt", weights_only=True) for r in range(N)]
    mine = [s["mine"] for s in states]
    delta_sq = 0.0
    for name, value in mine[0].items():
        if not value.is_floating_point():  # integer buffers are not averaged: each rank keeps its own
            for r, s in enumerate(states):
                assert torch.equal(s["average"][name], mine[r][name]), name
            continue
        delta = (mine[1][name] - mine[0][name]).double()
        for s in states:  # every rank gets the same average: base + (n - 1)/2 * delta
            torch.testing.assert_close(s["average"][name].double(), mine[0][name].double() + delta,
                                       rtol=1e-5, atol=1e-6)
        if "running" not in name:
            delta_sq += float(delta.pow(2).sum())
    assert delta_sq > 0
    for s in states:
        assert s["distance"] == pytest.approx(2 / 3 * delta_sq, rel=1e-5)


def test_training_loop_reports_the_averaged_models_accuracy_and_distance(run):
    """After one epoch of Crossover-SGD: consensus_val_acc (the same on every rank) is the accuracy
    of the mean of the ranks' checkpointed models, val_acc each rank's own, and consensus_distance
    the formula on those replicas; traffic and communication time are counted.

    The run is in float64 (``dtype="float64"``): the accuracies recomputed here (a mean taken in
    another order, one batch instead of the loop's) differ from the loop's weights and logits by
    rounding, and accuracy compares exactly only if no validation sample has its two top logits
    within that rounding of each other: ~1e-4 likely per run in float32, ~1e-13 in float64."""
    rows = [read_metrics(run / "train" / f"metrics_rank{r}.csv")[-1] for r in range(N)]
    step = int(rows[0]["step"])
    models = [torch.load(run / "train" / "checkpoints" / f"step{step:08d}" / f"rank{r}.pt",
                         weights_only=True)["model_state"] for r in range(N)]
    assert all(t.dtype == torch.float64 for m in models for t in m.values() if t.is_floating_point())
    val = build_datasets(TrainConfig()).val
    inputs = torch.stack([val[i][0] for i in range(len(val))]).double()
    targets = torch.tensor([val[i][1] for i in range(len(val))])

    def accuracy(state):
        model = build_model("small_cnn", 10, 1, 8).double()
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            return float((model(inputs).argmax(1) == targets).double().mean())

    average = {k: torch.stack([m[k].double() for m in models]).mean(0).to(models[0][k].dtype) for k in models[0]}
    own = [accuracy(m) for m in models]
    assert len({row["consensus_val_acc"] for row in rows}) == 1
    assert float(rows[0]["consensus_val_acc"]) == pytest.approx(accuracy(average), abs=1e-12)
    assert [float(row["val_acc"]) for row in rows] == pytest.approx(own, abs=1e-12)
    x = np.stack([np.concatenate([m[k].double().reshape(-1).numpy() for k in m]) for m in models])
    distance = ((x - x.mean(0)) ** 2).sum(1).mean()
    assert distance > 0
    for row in rows:
        assert float(row["consensus_distance"]) == pytest.approx(distance, rel=1e-4)
        assert int(row["comm_bytes_sent"]) > 0 and int(row["comm_bytes_recv"]) > 0
        assert float(row["comm_seconds"]) > 0
