"""Sandblaster L-BFGS with real processes: its iterates on a deterministic full-batch problem (the
digits, multinomial logistic regression, float64) equal ``torch.optim.LBFGS``'s with the same
settings, whatever the number of replicas, shards and the portion size; a replica killed and one
frozen mid-run (its portion backed up) change nothing; a slowed replica gets fewer portions."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest
import torch

from support import SANDBLASTER, cleanup_ranks, csv_rows, finish_ranks, start_ranks, wait_until

pytestmark = pytest.mark.slow

LBFGS = dict(lr=1.0, max_iter=4, history_size=5, line_search_fn="strong_wolfe")
BASE = SANDBLASTER


def reference(epochs: int) -> dict:
    """torch.optim.LBFGS on the full training set: one step() per epoch."""
    from crossover_sgd.training.data import load_digits
    from crossover_sgd.training.models import build_model

    train, _ = load_digits()
    inputs, targets = train.tensors
    inputs = inputs.to(torch.float64)
    torch.manual_seed(0)
    model = build_model("logistic", 10, 1, 8).to(torch.float64)
    optimizer = torch.optim.LBFGS(model.parameters(), **LBFGS)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        return loss

    for _ in range(epochs):
        optimizer.step(closure)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def final_state(out, rank):
    (path,) = sorted(out.glob(f"checkpoints/step*/rank{rank}.pt"))[-1:]
    return torch.load(path, weights_only=True)["model_state"]


def assert_close(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-7, atol=1e-9), (k, (a[k] - b[k]).abs().max())


@pytest.mark.parametrize("shards,replicas,portion", [(1, 2, 200), (2, 3, 97)])
def test_iterates_equal_torch_lbfgs_whatever_the_replicas_shards_and_portions(shared_run, shards, replicas, portion):
    """(The runs, 2 epochs of ``support.SANDBLASTER``, also feed the plotting tests.)"""
    out = shared_run(f"sandblaster-{shards}s{replicas}r{portion}p")
    expected = reference(2)
    for rank in range(shards + 1, shards + 1 + replicas):
        assert_close(final_state(out, rank), expected)
    coordinator = json.loads((out / "ps" / "coordinator.json").read_text())
    assert coordinator["portions"] == -(-coordinator["batch"] // portion)
    assert sum(coordinator["portions_by_replica"].values()) == coordinator["func_evals"] * coordinator["portions"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_val_acc"][0] >= 0.90  # 8 L-BFGS iterations train the logistic regression


def test_a_killed_and_a_frozen_replica_change_no_iterate_and_a_slow_one_gets_fewer_portions(tmp_path):
    """1 shard, the coordinator, 5 replicas (ranks 2..6; rank 2 sleeps 3x each portion's time):
    rank 6 SIGKILLed (its connection closes: dropped at once) and rank 5 SIGSTOPped (its portion
    never comes: a backup computes it, then it is dropped for its silence) mid-run."""
    out, nproc, epochs = tmp_path / "run", 7, 4
    argv = [sys.executable, "-m", "crossover_sgd", "train", *BASE, "--ps-shards", "1", "--epochs", str(epochs),
            "--portion-size", "60", "--slow-replicas", "0", "--slow-factor", "3", "--timeout", "10", "--out", str(out)]
    procs = start_ranks(argv, nproc)
    try:
        wait_until(lambda: csv_rows(out / "ps" / "coordinator.csv") >= 2, lambda: all(p.poll() is None for p in procs),
                   "two L-BFGS iterations")
        os.kill(procs[6].pid, signal.SIGKILL)
        os.kill(procs[5].pid, signal.SIGSTOP)
        ended = finish_ranks(procs, [0, 1, 2, 3, 4])
    finally:
        cleanup_ranks(procs)
    assert {rank: code for rank, (code, _, _) in ended.items()} == {r: 0 for r in range(5)}, ended
    expected = reference(epochs)
    for rank in (2, 3, 4):
        assert_close(final_state(out, rank), expected)
    coordinator = json.loads((out / "ps" / "coordinator.json").read_text())
    assert sorted(coordinator["lost_replicas"]) == [5, 6]
    assert coordinator["backups"] > 0  # the frozen replica's portion: computed again, nothing changed
    by = {int(r): n for r, n in coordinator["portions_by_replica"].items()}
    assert by[2] < min(by[3], by[4])  # training rank 0 sleeps 3x each portion's time: it gets fewer


def test_a_killed_coordinator_ends_every_rank_with_a_line_naming_it(tmp_path):
    out, nproc = tmp_path / "run", 5
    procs = start_ranks([sys.executable, "-m", "crossover_sgd", "train", *BASE, "--ps-shards", "1", "--epochs", "50",
                         "--portion-size", "60", "--out", str(out)], nproc)
    try:
        wait_until(lambda: csv_rows(out / "ps" / "coordinator.csv") >= 2, lambda: all(p.poll() is None for p in procs),
                   "two L-BFGS iterations")
        os.kill(procs[1].pid, signal.SIGKILL)
        ended = finish_ranks(procs, [0, 2, 3, 4])
    finally:
        cleanup_ranks(procs)
    for rank, (code, err, seconds) in ended.items():
        assert code == 3 and "lost coordinator (rank 1)" in err, (rank, code, err[-2000:])
        assert seconds <= 30 + 10, seconds
