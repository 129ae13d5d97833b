"""Downpour SGD (DistBelief) against its math, with real processes: one replica fetching and
pushing every step is plain SGD on the shards (and with Adagrad, ``torch.optim.Adagrad``), step
for step; the result does not depend on the number of shards; staleness is recorded."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from support import cli, digits_reference

pytestmark = pytest.mark.slow

LR = 0.05
#: One epoch of the 1,437 training digits in batches of 32: 44 steps. float64, no momentum or
#: weight decay: the replica's local step is overwritten by the fetch before its next step anyway.
BASE = ("train", "--algorithm", "downpour", "--epochs", "1", "--batch-size", "32", "--dtype", "float64",
        "--momentum", "0", "--weight-decay", "0", "--lr-schedule", "constant", "--lr", str(LR), "--workers", "0",
        "--timeout", "60", "--log-level", "WARNING")
STEPS = 44


def final_state(out, rank):
    (path,) = sorted(out.glob(f"checkpoints/step*/rank{rank}.pt"))[-1:]
    return torch.load(path, weights_only=True)["model_state"]


def close(a, b, tol=1e-10):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=tol) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("downpour")
    outs = {}
    for name, args in {"sgd": ("--nproc", "2"), "adagrad": ("--nproc", "2", "--ps-optimizer", "adagrad"),
                       "adagrad_3_shards": ("--nproc", "4", "--ps-shards", "3", "--ps-optimizer", "adagrad")}.items():
        outs[name] = root / name
        done = cli(*BASE, *args, "--out", str(outs[name]), timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    return outs


def test_one_replica_fetching_and_pushing_every_step_is_plain_sgd(runs):
    reference = digits_reference(lambda p: torch.optim.SGD(p, lr=LR), 1, 32, STEPS)
    assert close(final_state(runs["sgd"], 1), reference)
    shard = json.loads((runs["sgd"] / "ps" / "shard0.json").read_text())
    assert shard["updates"] == STEPS and shard["staleness_histogram"] == {"0": STEPS}  # one replica: never stale


def test_with_adagrad_it_is_torch_adagrad(runs):
    reference = digits_reference(lambda p: torch.optim.Adagrad(p, lr=LR), 1, 32, STEPS)
    assert close(final_state(runs["adagrad"], 1), reference)
    assert not close(final_state(runs["adagrad"], 1), final_state(runs["sgd"], 1), tol=1e-3)  # Adagrad did act


def test_the_result_does_not_depend_on_the_number_of_shards(runs):
    one, three = final_state(runs["adagrad"], 1), final_state(runs["adagrad_3_shards"], 3)
    assert one.keys() == three.keys() and all(torch.equal(one[k], three[k]) for k in one)
    for s in range(3):
        assert json.loads((runs["adagrad_3_shards"] / "ps" / f"shard{s}.json").read_text())["updates"] == STEPS


def test_stopped_and_resumed_equals_uninterrupted(runs, tmp_path):
    """A stop (--stop-at-step, what a Slurm requeue does) and --resume: the first replica's
    checkpoint holds every shard's state (slice, counters, Adagrad accumulator, staleness), so the
    resumed run of one replica with 3 shards equals the uninterrupted one (with 1 shard: the
    result does not depend on it) bit for bit, records appended."""
    out = tmp_path / "parts"
    for extra in (("--stop-at-step", "20"), ("--resume",)):
        done = cli(*BASE, "--nproc", "4", "--ps-shards", "3", "--ps-optimizer", "adagrad", "--out", str(out), *extra,
                   timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    whole, resumed = final_state(runs["adagrad"], 1), final_state(out, 3)
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    for s in range(3):
        shard = json.loads((out / "ps" / f"shard{s}.json").read_text())
        assert shard["updates"] == STEPS and shard["staleness_histogram"] == {"0": STEPS}, shard
    with (out / "ps" / "shard0.csv").open() as handle:
        assert [int(row["round"]) for row in csv.DictReader(handle)] == list(range(1, STEPS + 1))
    with (out / "ps" / "worker_rank3.csv").open() as handle:
        assert [int(row["push"]) for row in csv.DictReader(handle)] == list(range(STEPS))


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_four_replicas_reach_90_percent_on_the_default_data(shared_run, optimizer):
    """(The runs: ``support.DOWNPOUR_TRAINING``; they also feed the plotting tests.)"""
    out = shared_run(f"downpour-{optimizer}")
    shard = json.loads((out / "ps" / "shard0.json").read_text())
    assert shard["test_acc"] >= 0.90, shard
    assert shard["updates"] == 4 * 10 * 11 and shard["lost_replicas"] == []  # every push applied, 11 steps/epoch
    assert max(int(k) for k in shard["staleness_histogram"]) >= 1  # 4 replicas: some pushes are stale
    with (out / "ps" / "shard0.csv").open() as handle:
        replicas = [int(row["replica"]) for row in csv.DictReader(handle)]
    assert replicas[:20] == [1] * 20 and len(set(replicas[20:40])) > 1  # the warm start: replica 1 alone first
