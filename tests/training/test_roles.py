"""Process roles end to end through the real ``run_worker``, with real ranks (tests/workers/roles.py).

* A parameter-server rank (a role of the algorithm's own) that takes the optimizer step over
  trains bitwise like AllReduce-SGD over the same trainers, and writes none of a trainer's outputs.
* A family without collectives over the training group (``group_collectives = False``) goes on
  after one of its ranks is SIGKILLed mid-training: the others finish, each with its own metrics.

Ranks are started by hand with the launcher's variables (the local launcher would stop every rank
when one dies), and every wait is bounded.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
import torch

from crossover_sgd.training.checkpoint import published_checkpoint

from crossover_sgd.runtime.launch import free_port
from support import ROOT, child_env, read_metrics

pytestmark = pytest.mark.slow
WORKER = ROOT / "tests" / "workers" / "roles.py"
LIMIT_S = 150.0  # a run takes seconds; a hung rank fails the test instead of hanging it


def start_ranks(mode: str, out: Path, results: Path, world: int,
                extra: Optional[Dict[str, str]] = None) -> List[subprocess.Popen]:
    """``world`` ranks of the worker, torchrun-style variables, stderr to ``results/stderr{R}``."""
    results.mkdir(parents=True, exist_ok=True)
    port, procs = free_port(), []
    for rank in range(world):
        env = child_env({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                         "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                         **(extra or {})})
        with open(results / f"stderr{rank}", "w") as err:
            procs.append(subprocess.Popen([sys.executable, str(WORKER), mode, str(out), str(results)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT))
    return procs


def wait_ranks(procs: Sequence[subprocess.Popen], ranks: Sequence[int], deadline: float) -> None:
    """Wait until the processes of ``ranks`` have exited, at most until ``deadline`` (monotonic)."""
    for rank in ranks:
        try:
            procs[rank].wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"rank {rank} still runs after {LIMIT_S:.0f} s", pytrace=False)


def stop(procs: Sequence[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stderr(results: Path, rank: int) -> str:
    return (results / f"stderr{rank}").read_text()[-3000:]


def final_states(out: Path) -> Dict[int, dict]:
    """Each rank's checkpoint at the published (last) step, by world rank."""
    step = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    folder = out / "checkpoints" / f"step{step:08d}"
    return {int(p.stem[4:]): torch.load(p, weights_only=True) for p in sorted(folder.glob("rank*.pt"))}


def fresh_model():
    """The workers' initial model (SHARED in tests/workers/roles.py: digits, small_cnn, seed 5)."""
    from crossover_sgd.training.models import build_model

    torch.manual_seed(5)
    return build_model("small_cnn", 10, 1, 8)


# ------------------------------------------------------------------------------------ server role
@pytest.fixture(scope="module")
def server_runs(tmp_path_factory) -> Dict[str, Path]:
    """A 3-rank run of the test's central server (rank 0 serves, 1 and 2 train) and a 2-rank
    AllReduce-SGD run with the same settings, side by side."""
    base = tmp_path_factory.mktemp("roles")
    worlds = {"central-server": 3, "allreduce": 2}
    procs = {mode: start_ranks(mode, base / mode, base / f"{mode}-results", world) for mode, world in worlds.items()}
    try:
        deadline = time.monotonic() + LIMIT_S
        for mode, world in worlds.items():
            wait_ranks(procs[mode], range(world), deadline)
    finally:
        for group in procs.values():
            stop(group)
    for mode, world in worlds.items():
        for rank in range(world):
            assert procs[mode][rank].returncode == 0, (mode, rank, stderr(base / f"{mode}-results", rank))
    runs = {mode: base / mode for mode in worlds}
    runs.update({f"{mode}-results": base / f"{mode}-results" for mode in worlds})
    return runs


def test_server_takes_the_optimizer_step_bitwise_like_allreduce(server_runs):
    server_out, allreduce_out = server_runs["central-server"], server_runs["allreduce"]
    served = final_states(server_out)
    reference = final_states(allreduce_out)
    assert sorted(served) == [1, 2] and sorted(reference) == [0, 1]
    server = torch.load(server_runs["central-server-results"] / "rank0.pt", weights_only=False)
    start = fresh_model().state_dict()
    for train_rank, world_rank in enumerate((1, 2)):
        mine, theirs = served[world_rank]["model_state"], reference[train_rank]["model_state"]
        assert mine.keys() == theirs.keys() == server["model_state"].keys()
        for key in mine:
            assert torch.equal(mine[key], theirs[key]), f"trainer {world_rank} {key} differs from allreduce"
            assert torch.equal(mine[key], server["model_state"][key]), f"trainer {world_rank} {key} != server's"
        assert any(not torch.equal(mine[k], start[k]) for k in mine), "the parameters never moved"
    summary = json.loads((server_out / "summary.json").read_text())
    assert server["role"] == "server" and server["steps"] == summary["steps_done"] == 2 * 22
    assert server["comm"]["rounds"] == 44
    # the trainers' traffic: one gradient buffer out, one parameter buffer in, per step
    assert served[1]["algorithm_state"]["comm"]["bytes_sent"] == served[1]["algorithm_state"]["comm"]["bytes_recv"] > 0


def test_server_rank_writes_no_trainer_outputs(server_runs):
    out, reference = server_runs["central-server"], server_runs["allreduce"]
    assert not (out / "metrics_rank0.csv").exists()
    assert sorted(p.name for p in out.glob("metrics_rank*.csv")) == ["metrics_rank1.csv", "metrics_rank2.csv"]
    summary = json.loads((out / "summary.json").read_text())
    expected = json.loads((reference / "summary.json").read_text())
    assert summary["world_size"] == 3 and summary["status"] == "finished"
    assert summary["global_batch"] == 32 * 2 == expected["global_batch"]
    assert len(summary["final_val_acc"]) == 2 and None not in summary["final_val_acc"]
    assert summary["final_val_acc"] == expected["final_val_acc"]  # the same models, evaluated alike
    # the checkpoint is published for the trainers: complete (resumable) without a file of the server
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["ranks"] == [1, 2]
    assert sorted(p.name for p in published_checkpoint(out, 3).glob("*.pt")) == ["rank1.pt", "rank2.pt"]
    for world_rank, ref_rank in ((1, 0), (2, 1)):
        rows, ref_rows = read_metrics(out / f"metrics_rank{world_rank}.csv"), read_metrics(
            reference / f"metrics_rank{ref_rank}.csv")
        assert [r["epoch"] for r in rows] == ["1", "2"]
        for row, ref in zip(rows, ref_rows):
            for column in ("step", "train_loss", "val_loss", "val_acc", "consensus_distance"):
                assert row[column] == ref[column], (world_rank, column)


# ------------------------------------------------------------------------------- no collectives
def own_accuracy(model_state: dict) -> float:
    from crossover_sgd.algorithms import make_config
    from crossover_sgd.training.data import build_datasets

    model = fresh_model()
    model.load_state_dict(model_state)
    model.eval()
    val = build_datasets(make_config(dataset="digits")).val
    inputs = torch.stack([val[i][0] for i in range(len(val))])
    targets = torch.tensor([int(val[i][1]) for i in range(len(val))])
    with torch.no_grad():
        return float((model(inputs).argmax(1) == targets).sum()) / len(val)


def test_family_without_group_collectives_goes_on_after_losing_a_peer(tmp_path):
    out, results, victim = tmp_path / "run", tmp_path / "results", 1
    survivors = [0, 2]
    procs = start_ranks("local-alone", out, results, 3, {"ROLES_TEST_VICTIM": str(victim)})
    try:
        deadline = time.monotonic() + LIMIT_S
        while not all((results / f"started_rank{r}").exists() for r in range(3)):  # every rank is training
            early = [r for r, p in enumerate(procs) if p.poll() is not None]
            assert not early, f"rank(s) {early} ended before training: {stderr(results, early[0])}"
            assert time.monotonic() < deadline, "the ranks did not start training"
            time.sleep(0.05)
        os.kill(procs[victim].pid, signal.SIGKILL)
        procs[victim].wait(timeout=30)
        (results / "victim_killed").touch()  # the survivors' first step ends only now
        wait_ranks(procs, survivors, deadline)
    finally:
        stop(procs)
    assert procs[victim].returncode == -signal.SIGKILL
    for rank in survivors:
        assert procs[rank].returncode == 0, (rank, stderr(results, rank))
    assert not (out / "metrics_rank1.csv").exists()
    # without collectives nothing is published: each trainer keeps its own latest checkpoint alone
    assert not (out / "checkpoints" / "latest.json").exists()
    files = {int(p.stem[4:]): p for p in (out / "checkpoints").glob("step*/rank*.pt")}
    assert sorted(files) == survivors and len(list((out / "checkpoints").glob("step*/rank*.pt"))) == 2
    states = {rank: torch.load(path, weights_only=True) for rank, path in files.items()}
    for rank in survivors:
        rows = read_metrics(out / f"metrics_rank{rank}.csv")
        assert [r["epoch"] for r in rows] == ["1", "2", "3"], rank
        assert all(math.isnan(float(r["consensus_distance"])) for r in rows), rows
        assert all(r["consensus_val_acc"] == r["val_acc"] for r in rows)
        assert float(rows[-1]["val_acc"]) == own_accuracy(states[rank]["model_state"]), rank  # its own model
        assert states[rank]["step"] == int(rows[-1]["step"]) == 3 * 14
        result = torch.load(results / f"rank{rank}.pt", weights_only=False)
        assert result["status"] == "finished"
        assert result["final_val_acc"] == [float(rows[-1]["val_acc"])]  # its own, alone
    # nothing was averaged: the survivors trained on different shards and hold different models
    assert any(not torch.equal(states[0]["model_state"][k], states[2]["model_state"][k])
               for k in states[0]["model_state"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps_done"] == 3 * 14
