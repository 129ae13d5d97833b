"""A parameter-server run stopped and resumed (``--stop-at-step``, then ``--resume``: what a Slurm
requeue does) equals the uninterrupted run: the shards start again from the first worker's
checkpoint (taken at a segment's end, where it holds the global model and the shards' counters)."""

from __future__ import annotations

import csv

import pytest
import torch

from support import cli

pytestmark = pytest.mark.slow

#: K = 2 and a stop at step 6: the stop's segment end falls on a round's end, so the resumed run
#: aggregates exactly the rounds of the uninterrupted one (localSGD: nothing depends on timing).
ARGS = ("train", "--nproc", "3", "--algorithm", "localsgd", "--epochs", "2", "--local-steps", "2", "--timeout", "60",
        "--log-level", "WARNING", "--workers", "0")


def final_model(out, rank):
    (path,) = sorted(out.glob(f"checkpoints/step*/rank{rank}.pt"))[-1:]
    return torch.load(path, weights_only=True)["model_state"]


def rows(path, *columns):
    with path.open() as handle:
        return [tuple(row[c] for c in columns) for row in csv.DictReader(handle)]


def test_stopped_and_resumed_equals_uninterrupted(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for args in ((*ARGS, "--out", str(whole)), (*ARGS, "--out", str(parts), "--stop-at-step", "6"),
                 (*ARGS, "--out", str(parts), "--resume")):
        done = cli(*args, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    for rank in (1, 2):  # the workers (rank 0 is the server)
        a, b = final_model(whole, rank), final_model(parts, rank)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert rows(whole / f"metrics_rank{rank}.csv", "epoch", "val_acc") == \
            rows(parts / f"metrics_rank{rank}.csv", "epoch", "val_acc")
    shard = ("round", "global_iterations", "test_acc")
    assert rows(whole / "ps" / "shard0.csv", *shard) == rows(parts / "ps" / "shard0.csv", *shard)  # appended
    assert len(rows(parts / "ps" / "shard0.csv", *shard)) == 22  # 2 epochs x 11 rounds of 2 steps
