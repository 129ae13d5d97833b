"""Lost and slow nodes of the peer-to-peer family, with real processes started by hand as the
original ran them (``--node-name`` with ``node_list.json``/``hosts.json``), real SIGKILL and
SIGSTOP, and each node's own exit code and stderr.

A 5-node ring; node2 is killed or frozen once every node has written its first row:

* with ``--swap-timeout 5`` its two neighbours drop it within 2 x 5 s, every survivor finishes,
  writes its complete CSV and exits 0;
* without it, every survivor exits non-zero with one line naming the lost node (a neighbour's
  neighbour names the neighbour it lost and, from the rendezvous store, node2 as the first loss),
  within the timeout (plus the store host's wait of 5 s).

``--async-step`` with one node slowed on purpose: the others do not wait for it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

from support import child_env
from crossover_sgd.runtime.launch import free_port
from topology.nodes import generated_nodes, write_hosts, write_node_list

pytestmark = pytest.mark.slow

N, EPOCHS, VICTIM = 5, 6, 2
WAIT_S = 180  # every wait of these tests is bounded by an event or this


def start_nodes(tmp_path: Path, extra: Sequence[str], per_node: Dict[int, Sequence[str]] = None) -> List[subprocess.Popen]:
    nodes = generated_nodes("ring", N)
    write_node_list(nodes, tmp_path / "node_list.json")
    write_hosts(nodes, tmp_path / "hosts.json", address="127.0.0.1", port=free_port())
    procs = []
    for i in range(N):
        argv = [sys.executable, "-m", "crossover_sgd", "train", "--algorithm", "dsgd", "--node-list",
                str(tmp_path / "node_list.json"), "--hosts", str(tmp_path / "hosts.json"), "--node-name", f"node{i}",
                "--epochs", str(EPOCHS), "--out", str(tmp_path / f"out{i}"), *extra, *(per_node or {}).get(i, ())]
        procs.append(subprocess.Popen(argv, env=child_env({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    return procs


def csv_rows(tmp_path: Path, i: int) -> List[Dict[str, str]]:
    path = tmp_path / f"out{i}" / "nodes" / f"node{i}.csv"
    return list(csv.DictReader(path.open())) if path.exists() else []


def wait_until_all_have_a_row(tmp_path: Path, procs: List[subprocess.Popen]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not all(csv_rows(tmp_path, i) for i in range(N)):
        assert time.monotonic() < deadline, "the nodes never wrote their first row"
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
        time.sleep(0.1)


def finish(procs: List[subprocess.Popen]) -> Dict[int, tuple]:
    """Each survivor's (exit code, stderr, seconds until it ended, counted from now)."""
    started, ended = time.monotonic(), {}
    for i, proc in enumerate(procs):
        if i == VICTIM:
            continue
        try:
            _, err = proc.communicate(timeout=max(1.0, WAIT_S - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError(f"node{i} did not end within {WAIT_S} s")
        ended[i] = (proc.returncode, err, time.monotonic() - started)
    return ended


def stop_victim(proc: subprocess.Popen, how: str) -> float:
    os.kill(proc.pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
    return time.time()


def cleanup(procs: List[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_with_swap_timeout_the_survivors_drop_the_lost_node_and_finish(tmp_path, how):
    procs = start_nodes(tmp_path, ["--swap-timeout", "5"])
    try:
        wait_until_all_have_a_row(tmp_path, procs)
        when = stop_victim(procs[VICTIM], how)
        ended = finish(procs)
    finally:
        cleanup(procs)
    for i, (code, err, _) in ended.items():
        assert code == 0, (i, err[-3000:])
        rows = csv_rows(tmp_path, i)
        assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
        assert set(rows[0]) >= {"epoch", "train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc",
                                "live_neighbours"}
        node = json.loads((tmp_path / f"out{i}" / "nodes" / f"node{i}.json").read_text())
        assert node["status"] == "finished"
        for name in ("config.json", "summary.json", "train.log"):  # a node started by hand: its own run files
            assert (tmp_path / f"out{i}" / name).is_file(), (i, name)
        neighbour_of_victim = i in ((VICTIM - 1) % N, (VICTIM + 1) % N)
        assert node["node"]["dropped_neighbours"] == (["node2"] if neighbour_of_victim else [])
        if neighbour_of_victim:
            assert node["node"]["dropped_at"]["node2"] - when <= 2 * 5, node["node"]
            assert float(rows[-1]["live_neighbours"]) == 1.0
            assert "lost neighbour node2 (rank 2)" in err and "dropped from the neighbours for good" in err


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_without_swap_timeout_every_survivor_ends_naming_the_lost_node(tmp_path, how):
    timeout = 10
    procs = start_nodes(tmp_path, ["--timeout", str(timeout)])
    try:
        wait_until_all_have_a_row(tmp_path, procs)
        stop_victim(procs[VICTIM], how)
        ended = finish(procs)
    finally:
        cleanup(procs)
    for i, (code, err, seconds) in ended.items():
        assert code != 0, i
        lines = [line for line in err.splitlines() if line.startswith("crossover-sgd: error:")]
        assert len(lines) == 1 and "node2" in lines[0], (i, err[-3000:])
        assert "Traceback" not in err
        assert seconds <= timeout + 5 + 15, (i, seconds)  # the timeout, the store host's wait, start-up slack


def test_async_step_does_not_wait_for_a_slow_node(tmp_path):
    """node2 sleeps 30 times its step time after every step (about 10 s of training here, the
    others' 1-3 s while they share the CPUs). With --async-step its neighbours use its last message
    and finish long before it; every node still runs every step."""
    procs = start_nodes(tmp_path, ["--async-step", "--swap-timeout", "20", "--epochs", "3"],
                        per_node={VICTIM: ["--sleep-factor", "30"]})
    try:
        started = time.monotonic()
        ended, deadline = {}, started + WAIT_S
        while len(ended) < N:
            assert time.monotonic() < deadline, "the nodes did not end"
            for i, proc in enumerate(procs):
                if i not in ended and proc.poll() is not None:
                    ended[i] = (proc.returncode, proc.communicate()[1], time.monotonic() - started)
            time.sleep(0.05)
    finally:
        cleanup(procs)
    assert all(code == 0 for code, _, _ in ended.values()), {i: e[1][-2000:] for i, e in ended.items() if e[0]}
    summaries = {i: json.loads((tmp_path / f"out{i}" / "nodes" / f"node{i}.json").read_text()) for i in range(N)}
    training_s = {i: s["wall_time_s"] for i, s in summaries.items()}  # node0 then waits for the others
    assert max(t for i, t in training_s.items() if i != VICTIM) < 0.6 * training_s[VICTIM], training_s
    assert len({s["steps_done"] for s in summaries.values()}) == 1
    for summary in summaries.values():  # nobody was dropped: the slow node had a heartbeat, the others ended
        assert summary["node"]["dropped_neighbours"] == []


def test_under_the_local_launcher_with_swap_timeout_the_other_ranks_finish(tmp_path):
    """``--nproc 4`` with ``--swap-timeout``: the launcher announces the killed rank and lets the
    others finish (instead of stopping them); the job succeeds when every other rank does."""
    from support import MarkedLauncher, wait_until

    out = tmp_path / "run"
    with MarkedLauncher(["train", "--nproc", "4", "--algorithm", "admm-isvr", "--swap-timeout", "5", "--epochs",
                         str(EPOCHS), "--out", str(out), "--workers", "0"]) as job:
        wait_until(lambda: all((out / "nodes" / f"node{i}.csv").exists() for i in range(4)), job.alive,
                   "the run getting going", WAIT_S)
        os.kill(job.rank_pid(2), signal.SIGKILL)
        code, err, _ = job.end(WAIT_S)
    assert code == 0, err[-3000:]
    assert "rank 2 exited with code -9; the other ranks go on without it (--swap_timeout)" in err
    assert job.left == {}
    for i in (0, 1, 3):
        node = json.loads((out / "nodes" / f"node{i}.json").read_text())
        assert node["status"] == "finished"
        assert node["node"]["dropped_neighbours"] == (["node2"] if i in (1, 3) else [])
