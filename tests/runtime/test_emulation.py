"""The emulated cluster (issue 15): nodes as network namespaces joined by rate-limited links.

Real namespaces, veths, bridges and tc qdiscs: these tests need root and iproute2 (CI runs as
root; elsewhere they skip with the reason, and under ``CI`` they fail instead). Every test checks
that its cluster leaves nothing behind: no namespace of its launcher, and the host's own links and
qdiscs as they were.

Time (2 busy cores, about 150 s in all): the parser, the layout and the launches of plain Python
ranks a few seconds together; netcheck 11-15 s per rate; the training comparison (two 4-rank runs)
about 30 s; the cut link 35-45 s (start, the process-group timeout, the lost-peer diagnosis); the
cut link of a peer-to-peer run 33-36 s (start, the swap timeout, the store's side finishing).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from crossover_sgd.errors import ConfigError
from crossover_sgd.runtime import emulation
from crossover_sgd.runtime.emulation import (EmulatedCluster, check_available, list_namespaces, node_namespace,
                                              parse_rate, plan_emulation, set_link, switch_namespace, sweep_stale)
from support import child_env, csv_rows, kill_marked, marked_processes, read_metrics, unavailable, wait_until

RUN_TIMEOUT = 180  # seconds: any launch here; they take 5-40 s
TIMING_COLUMNS = {"comm_seconds", "wall_time_s"}


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def can_emulate() -> None:
    """Root, Linux, ip and tc, and a namespace that can really be made."""
    try:
        check_available()
        with EmulatedCluster(1, parse_rate("1gbit")):
            pass
    except (ConfigError, RuntimeError) as exc:
        unavailable(f"no emulated cluster on this machine: {exc}")


def _ip(*args: str) -> str:
    """The output of ``ip``/``tc`` ARGS (found where the cluster finds them: also in /usr/sbin)."""
    tool = emulation._tool(args[0]) or args[0]
    return subprocess.run([tool, *args[1:]], capture_output=True, text=True, timeout=30, check=True).stdout


def host_network() -> Tuple[List[str], List[str]]:
    """The names of this namespace's links and its qdiscs (what a cluster must leave as it was)."""
    links = sorted(line.split(":")[1].strip().split("@")[0] for line in _ip("ip", "-o", "link", "show").splitlines())
    return links, sorted(_ip("tc", "qdisc", "show").splitlines())


def leftovers(launcher_pid: int) -> List[str]:
    """The namespaces of the cluster of ``launcher_pid`` that still exist."""
    pattern = re.compile(rf"^csgd{launcher_pid}(n\d+|sw)$")
    return [name for name in list_namespaces() if pattern.match(name)]


def cpu_env(marker: Optional[str] = None) -> Dict[str, str]:
    extra = {"CUDA_VISIBLE_DEVICES": ""}
    if marker:
        extra["CROSSOVER_SGD_TEST_MARKER"] = marker
    return child_env(extra)


def launch(args: Sequence[str], marker: Optional[str] = None) -> subprocess.Popen:
    """``python -m crossover_sgd ARGS`` (its pid names its cluster's namespaces)."""
    return subprocess.Popen([sys.executable, "-m", "crossover_sgd", *args], env=cpu_env(marker),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> Tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} did not end within {timeout} s:\n{err[-3000:]}")
    return proc.returncode, out, err


def wait_for(condition, what: str, proc: Optional[subprocess.Popen] = None, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {limit} s"
        assert proc is None or proc.poll() is None, f"the launcher ended before {what}: " \
                                                    f"{proc.stderr.read()[-3000:] if proc.stderr else proc.returncode}"
        time.sleep(0.05)


# ----------------------------------------------------------------------------- no root needed
@pytest.mark.parametrize("text,bits", [("200mbit", 2 * 10 ** 8), ("1gbit", 10 ** 9), ("1Gbit/s", 10 ** 9),
                                       ("500M", 5 * 10 ** 8), ("10g", 10 ** 10), ("100000000", 10 ** 8),
                                       ("2.5gbit", 25 * 10 ** 8), (" 750 Mbit/s ", 75 * 10 ** 7), ("1e9", 10 ** 9),
                                       ("100kbit", 10 ** 5), (10 ** 9, 10 ** 9)])
def test_rate_parser_reads_bits_per_second_with_si_prefixes(text, bits):
    assert parse_rate(text) == bits


@pytest.mark.parametrize("text", ["fast", "1gbps", "1GB/s", "0", "-1gbit", "", "nan", "inf", "1 gbit/h", "10 kb",
                                  "1tbit", "50kbit", "1.2.3g"])
def test_rate_parser_refuses_with_one_line_naming_the_value_and_the_forms(text):
    with pytest.raises(ConfigError) as caught:
        parse_rate(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"--link-rate {text!r} ")
    assert "200mbit, 1gbit, 1Gbit/s, 500M, 10g" in message


def test_plan_places_ranks_on_nodes_and_refuses_bad_combinations():
    assert plan_emulation(4, None, None) is None
    plan = plan_emulation(4, 2, "1gbit")
    assert (plan.nodes, plan.rate_bits_per_s, plan.ranks_per_node) == (2, 10 ** 9, 2)
    assert plan_emulation(3, 3, "200mbit").ranks_per_node == 1
    for nproc, nodes, rate, words in [(None, 2, "1gbit", "add --nproc N"), (4, 3, "1gbit", "divisor of 4"),
                                      (2, 4, "1gbit", "1 .. 2"), (2, 0, "1gbit", "1 .. 2"),
                                      (2, 2, None, "needs --link-rate"), (2, None, "1gbit", "needs --emulate-nodes"),
                                      (2, 2, "fast", "'fast' is not a rate")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            plan_emulation(nproc, nodes, rate)


@pytest.mark.parametrize("missing", ["root", "tools"])
def test_without_root_or_iproute2_one_line_says_what_is_missing(monkeypatch, capsys, missing):
    from crossover_sgd import cli

    monkeypatch.setattr(os, "geteuid", lambda: 1000 if missing == "root" else 0)
    if missing == "tools":
        monkeypatch.setattr(emulation, "_tool", lambda name: None)
    code = cli.main(["launch-info", "--nproc", "2", "--emulate-nodes", "2", "--link-rate", "1gbit"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("crossover-sgd: error: --emulate-nodes needs ")
    expected = ("root", "run as root", "or drop --emulate-nodes") if missing == "root" else \
        ("ip and tc", "install iproute2", "or drop --emulate-nodes")
    assert all(word in lines[0] for word in expected), lines[0]


# ----------------------------------------------------------------------------- real namespaces
@pytest.mark.usefixtures("can_emulate")
def test_cluster_layout_shaping_cut_and_teardown():
    before = host_network()
    with EmulatedCluster(2, parse_rate("200mbit")) as cluster:
        pid = os.getpid()
        assert sorted(leftovers(pid)) == sorted([node_namespace(pid, 0), node_namespace(pid, 1), switch_namespace(pid)])
        for node in cluster.nodes:
            ns = node.namespace
            assert f"inet {node.address}/24" in _ip("ip", "-n", ns, "addr", "show", "dev", "eth0")
            assert "state UP" in _ip("ip", "-n", ns, "link", "show", "dev", "eth0")
            # both directions shaped: the node's egress, and the switch port's (the node's ingress)
            for shaped_ns, dev in ((ns, "eth0"), (cluster.switch, node.switch_port)):
                classes = _ip("tc", "-n", shaped_ns, "class", "show", "dev", dev)
                assert "htb 1:1" in classes and "rate 200Mbit" in classes, classes
            assert "master br0" in _ip("ip", "-n", cluster.switch, "link", "show", "dev", node.switch_port)
            # the ranks of one node reach each other through its loopback (not the shaped link)
            assert " dev lo " in _ip("ip", "-n", ns, "route", "get", node.address)
        assert " dev eth0 " in _ip("ip", "-n", cluster.nodes[0].namespace, "route", "get", cluster.nodes[1].address)
        cluster.cut(1)
        assert "state DOWN" in _ip("ip", "-n", cluster.nodes[1].namespace, "link", "show", "dev", "eth0")
        cluster.restore(1)
        assert ",UP" in _ip("ip", "-n", cluster.nodes[1].namespace, "link", "show", "dev", "eth0")
    assert leftovers(os.getpid()) == []
    assert host_network() == before


_RANK = r"""
import json, os, sys
ns = f"/var/run/netns/csgd{os.getppid()}n{os.environ['GROUP_RANK']}"
keys = ("RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "GLOO_SOCKET_IFNAME",
        "CROSSOVER_SGD_LINK_RATE", "CROSSOVER_SGD_EMULATED_NODES")
row = {k: os.environ.get(k) for k in keys}
row["in_node_namespace"] = os.stat("/proc/self/ns/net").st_ino == os.stat(ns).st_ino
with open(os.path.join(sys.argv[1], os.environ["RANK"] + ".json"), "w") as f:
    json.dump(row, f)
sys.exit(int(sys.argv[2]) if os.environ["RANK"] == "1" else 0)
"""


@pytest.mark.usefixtures("can_emulate")
def test_failed_run_leaves_nothing_and_a_second_run_places_every_rank_on_its_node(tmp_path, capfd):
    """A rank that exits 5 fails the launch (its cluster removed); the launch right after puts
    rank r in node r // 2's namespace, as a direct child of the launcher, with its placement."""
    from crossover_sgd.runtime.local_launcher import launch_local

    before = host_network()
    code = launch_local(2, [sys.executable, "-c", _RANK, str(tmp_path), "5"], grace_s=5, emulate_nodes=2,
                        link_rate="1gbit")
    assert code == 5
    assert "rank 1 exited with code 5" in capfd.readouterr().err
    assert leftovers(os.getpid()) == [] and host_network() == before
    code = launch_local(4, [sys.executable, "-c", _RANK, str(tmp_path), "0"], grace_s=5, emulate_nodes=2,
                        link_rate="200mbit")
    assert code == 0
    rows = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(4)]
    address = rows[0]["MASTER_ADDR"]
    assert re.fullmatch(r"10\.\d+\.\d+\.1", address)
    for rank, row in enumerate(rows):
        assert row == {"RANK": str(rank), "LOCAL_RANK": str(rank % 2), "LOCAL_WORLD_SIZE": "2",
                       "GROUP_RANK": str(rank // 2), "MASTER_ADDR": address, "GLOO_SOCKET_IFNAME": "eth0",
                       "CROSSOVER_SGD_LINK_RATE": "200000000", "CROSSOVER_SGD_EMULATED_NODES": "2",
                       "in_node_namespace": True}
    assert leftovers(os.getpid()) == [] and host_network() == before


_LAUNCHER = """
import sys
from crossover_sgd.runtime.local_launcher import launch_local
rank = sys.argv[1]  # the ranks' program
sys.exit(launch_local(2, [sys.executable, "-c", rank, *sys.argv[2:]], grace_s=5, emulate_nodes=2, link_rate="1gbit"))
"""
#: A rank that sleeps; ``stubborn``: it notes SIGINT and SIGTERM in DIR/<rank> and sleeps on (like
#: a rank stuck in a collective: only the launcher's SIGKILL, at a second signal, ends it).
_SLEEPER = """
import os, signal, sys, time
if sys.argv[1:2] == ["stubborn"]:
    note = lambda signum, frame: open(os.path.join(sys.argv[2], os.environ["RANK"]), "a").write(f"{signum}\\n")
    signal.signal(signal.SIGINT, note)
    signal.signal(signal.SIGTERM, note)
    open(os.path.join(sys.argv[2], "ready" + os.environ["RANK"]), "w").close()
time.sleep(120)
"""


def _start_sleeping_ranks(marker: str, *args: str) -> subprocess.Popen:
    # no pipes: the ranks of a killed launcher would hold them open
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, _SLEEPER, *args], env=cpu_env(marker),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len([e for e in marked_processes(marker).values() if "RANK" in e]) == 2, "both ranks started",
             launcher, limit=60)
    return launcher


@pytest.mark.usefixtures("can_emulate")
@pytest.mark.parametrize("stubborn", [False, True], ids=["ranks-stop", "ranks-stuck"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_the_launcher_removes_the_cluster(tmp_path, signum, stubborn):
    """The launcher forwards the signal; ranks that ignore it (stuck) are killed at the second
    one; then the cluster is gone."""
    marker, before = uuid.uuid4().hex, host_network()
    launcher = _start_sleeping_ranks(marker, *(["stubborn", str(tmp_path)] if stubborn else []))
    try:
        assert len(leftovers(launcher.pid)) == 3
        if stubborn:
            wait_for(lambda: all((tmp_path / f"ready{rank}").exists() for rank in range(2)), "handlers installed",
                     launcher, limit=30)
        launcher.send_signal(signum)
        if stubborn:
            wait_for(lambda: all((tmp_path / str(rank)).exists() for rank in range(2)), "the signal forwarded",
                     launcher, limit=30)
            assert launcher.poll() is None
            launcher.send_signal(signum)
        code = launcher.wait(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        left = kill_marked(marker)
    # a rank killed by the signal: 128 + its number; by SIGKILL: 137; a Python rank's KeyboardInterrupt: 1
    expected = {128 + signal.SIGKILL} if stubborn else {128 + signum} | ({1} if signum == signal.SIGINT else set())
    assert code in expected
    if stubborn:
        assert {(tmp_path / str(rank)).read_text() for rank in range(2)} == {f"{int(signum)}\n"}
    assert left == {}
    assert leftovers(launcher.pid) == [] and host_network() == before


@pytest.mark.usefixtures("can_emulate")
def test_leftovers_of_a_killed_launcher_are_swept_by_the_next_cluster():
    """SIGKILL leaves the launcher no chance: its namespaces stay until the next cluster starts,
    which removes those of launchers no longer alive (its ranks end with it: the parent-death
    signal)."""
    marker, before = uuid.uuid4().hex, host_network()
    launcher = _start_sleeping_ranks(marker)
    try:
        launcher.kill()
        launcher.wait()
        assert len(leftovers(launcher.pid)) == 3
        with EmulatedCluster(1, parse_rate("1gbit")):
            assert leftovers(launcher.pid) == []
        assert sweep_stale() == []
        wait_until(lambda: not marked_processes(marker), lambda: True, "the end of the orphaned ranks", wait_s=30)
    finally:
        left = kill_marked(marker)
    assert left == {}
    assert host_network() == before


def _netcheck(tmp_path: Path, nproc: int, rate: str) -> dict:
    report_path = tmp_path / f"netcheck-{rate}.json"
    proc = launch(["netcheck", "--nproc", str(nproc), "--emulate-nodes", "2", "--link-rate", rate,
                   "--json", str(report_path)])
    code, out, err = finish(proc)
    assert code == 0, err[-3000:]
    assert leftovers(proc.pid) == []
    report = json.loads(report_path.read_text())
    assert json.loads(out.strip().splitlines()[-1]) == report  # the table, then the same report as one line
    print(out)
    return report


@pytest.mark.slow
@pytest.mark.usefixtures("can_emulate")
@pytest.mark.parametrize("rate,bits", [("200mbit", 2 * 10 ** 8), ("1gbit", 10 ** 9)])
def test_netcheck_measures_the_set_rate_within_ten_percent(tmp_path, rate, bits):
    """Every node sends to the next and receives from the previous at once: each link direction
    carries one stream; the payload rate is within 10 % of the set rate (about 95 %: the
    Ethernet, IP and TCP headers count against the link). At 1 Gbit/s with 2 ranks per node, the
    ranks of one node also exchange over its loopback, unshaped: far faster than the link."""
    before = host_network()
    nproc = 2 if bits < 10 ** 9 else 4
    report = _netcheck(tmp_path, nproc, rate)
    assert (report["nodes"], report["emulated"], report["link_rate_bits_per_s"]) == (2, True, bits)
    links = [row for row in report["rows"] if row["phase"] == "link"]
    assert [(row["node"], row["from_node"]) for row in links] == [(0, 1), (1, 0)]
    for row in links:
        assert row["set_mbit_s"] == bits / 1e6
        assert 0.9 <= row["ratio"] <= 1.1, row
    local = [row for row in report["rows"] if row["phase"] == "local"]
    assert len(local) == (4 if nproc == 4 else 0)
    for row in local:
        assert row["measured_mbit_s"] > 2 * bits / 1e6, row
    assert host_network() == before


def _train(out: Path, emulate: bool) -> subprocess.Popen:
    args = ["train", "--nproc", "4", "--epochs", "1", "--workers", "0", "--log-level", "WARNING", "--seed", "3",
            "--out", str(out)]
    return launch(args + (["--emulate-nodes", "2", "--link-rate", "1gbit"] if emulate else []))


@pytest.mark.slow
@pytest.mark.usefixtures("can_emulate")
def test_training_on_the_emulated_cluster_gives_the_same_results(tmp_path):
    """Same seeds, same metrics (every column but the timings) and the same final weights and
    optimizer state, bit for bit, with and without the emulated cluster."""
    import torch

    runs = {}
    for emulate in (True, False):
        out = tmp_path / ("emulated" if emulate else "plain")
        proc = _train(out, emulate)
        code, _, err = finish(proc)
        assert code == 0, err[-3000:]
        assert leftovers(proc.pid) == []
        runs[emulate] = out
    for rank in range(4):
        metrics = [read_metrics(runs[e] / f"metrics_rank{rank}.csv") for e in (True, False)]
        assert len(metrics[0]) == len(metrics[1]) >= 1
        for row_emulated, row_plain in zip(*metrics):
            assert {k: v for k, v in row_emulated.items() if k not in TIMING_COLUMNS} == \
                   {k: v for k, v in row_plain.items() if k not in TIMING_COLUMNS}
        states = []
        for e in (True, False):
            (step,) = sorted((runs[e] / "checkpoints").glob("step*"))
            states.append(torch.load(step / f"rank{rank}.pt", map_location="cpu", weights_only=False))
        for key in ("model_state", "optimizer", "rng"):
            _assert_equal(states[0][key], states[1][key], f"rank {rank} {key}")
    summaries = [json.loads((runs[e] / "summary.json").read_text()) for e in (True, False)]
    assert summaries[0]["local_size"] == 2 and summaries[1]["local_size"] == 4  # the nodes were seen


def _assert_equal(a, b, where: str) -> None:
    import torch

    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.slow
@pytest.mark.usefixtures("can_emulate")
def test_a_cut_link_ends_a_lockstep_run_naming_the_unreachable_peers(tmp_path):
    """allreduce on 2 nodes of 2 ranks; node 1's link cut once both nodes have written metrics:
    the job ends with exit code 3 and one line from rank 0 naming ranks 2 and 3, within the
    process-group timeout plus the diagnosis (two heartbeat readings, the store kept up for the
    ranks that cannot reach it any more)."""
    timeout = 10.0
    out = tmp_path / "run"
    before = host_network()
    proc = launch(["train", "--nproc", "4", "--emulate-nodes", "2", "--link-rate", "1gbit", "--epochs", "500",
                   "--workers", "0", "--log-level", "WARNING", "--timeout", str(timeout), "--out", str(out)])
    try:
        wait_for(lambda: csv_rows(out / "metrics_rank0.csv") >= 1 and csv_rows(out / "metrics_rank2.csv") >= 1,
                 "metrics rows on both nodes", proc, limit=120)
        set_link(node_namespace(proc.pid, 1), up=False)
        cut = time.monotonic()
        code, _, err = finish(proc, timeout=timeout + 60)
        took = time.monotonic() - cut
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 3, err[-3000:]
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err[-3000:]
    assert errors[0].startswith("crossover-sgd: error: rank 0: communication failed: lost peer rank(s) [2, 3]: "
                                "no heartbeat"), errors[0]
    assert "cut off from the network" in errors[0]
    assert timeout - 1 <= took < timeout + 40, took
    assert leftovers(proc.pid) == [] and host_network() == before


class _Lines:
    """The lines a process writes to a pipe, each with the moment it arrived, read by a thread;
    ``wait(condition)`` waits (bounded) on an event set at every line."""

    def __init__(self, pipe):
        import threading

        self.lines: List[Tuple[float, str]] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            with self._changed:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._changed.notify_all()

    def wait(self, condition, limit: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: condition(self.lines), timeout=limit)

    def text(self, ended: bool = False) -> str:
        """What arrived so far (``ended``: the process ended; wait for the last lines)."""
        if ended:
            self._thread.join(timeout=30)
        with self._changed:
            return "\n".join(line for _, line in self.lines)


@pytest.mark.slow
@pytest.mark.usefixtures("can_emulate")
def test_a_cut_link_in_a_p2p_run_with_swap_timeout_drops_the_cut_side_which_ends(tmp_path):
    """dsgd on a ring of 4 nodes (ranks) on 2 emulated nodes, --swap-timeout 5; node 1's link
    (ranks 2 and 3) cut once both nodes have written a row. The side of rank 0, which hosts the
    rendezvous store, drops its neighbours on node 1 (rank 1 drops node2, rank 0 node3) and
    finishes every epoch; ranks 2 and 3, cut off from the store, end by themselves within the
    swap timeout plus a few heartbeat intervals (their watchdog), each with one line naming the
    lost store, and their CSVs hold the rows written up to there. The job exits 0: the side that
    keeps the store is the job (docs/emulation.md)."""
    swap_s, epochs, out = 5.0, 10, tmp_path / "run"
    before = host_network()
    proc = launch(["train", "--nproc", "4", "--emulate-nodes", "2", "--link-rate", "1gbit", "--algorithm", "dsgd",
                   "--swap-timeout", str(swap_s), "--epochs", str(epochs), "--workers", "0", "--log-level", "WARNING",
                   "--out", str(out)])
    stderr = _Lines(proc.stderr)
    try:
        wait_for(lambda: csv_rows(out / "nodes" / "node0.csv") >= 1 and csv_rows(out / "nodes" / "node2.csv") >= 1,
                 "rows on both nodes", proc, limit=120)
        set_link(node_namespace(proc.pid, 1), up=False)
        cut, cut_wall = time.monotonic(), time.time()
        assert csv_rows(out / "nodes" / "node0.csv") < epochs  # cut mid-run
        lost_store = lambda lines: [(t, line) for t, line in lines if "lost the rendezvous store" in line]  # noqa: E731
        assert stderr.wait(lambda lines: len(lost_store(lines)) == 2, limit=swap_s + 30), stderr.text()[-3000:]
        ended = {int(re.search(r"rank (\d+):", line).group(1)): t - cut for t, line in lost_store(stderr.lines)}
        code = proc.wait(timeout=120)  # (stderr is the reader's: no communicate())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    err = stderr.text(ended=True)
    assert code == 0, err[-3000:]
    assert sorted(ended) == [2, 3], err[-3000:]
    for rank, seconds in ended.items():  # the swap timeout, two heartbeat intervals, the launcher's poll
        assert swap_s - 0.5 <= seconds <= swap_s + 5, (rank, seconds)
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 2, err[-3000:]  # one line per cut-off rank, nothing from the other side
    for rank, line in zip((2, 3), sorted(errors)):
        assert line.startswith(f"crossover-sgd: error: rank {rank}: lost the rendezvous store on rank 0 ("), line
        assert "unreachable" in line and line.endswith("; the other ranks go on without it (--swap_timeout)"), line
    for i in range(4):
        rows = [int(row["epoch"]) for row in csv.DictReader((out / "nodes" / f"node{i}.csv").open())]
        node = out / "nodes" / f"node{i}.json"
        if i < 2:  # the store's side: every epoch, the neighbour on node 1 dropped within two swap timeouts
            assert rows == list(range(1, epochs + 1)), (i, rows)
            summary = json.loads(node.read_text())
            assert summary["status"] == "finished"
            dropped = "node2" if i == 1 else "node3"
            assert summary["node"]["dropped_neighbours"] == [dropped], summary["node"]
            assert summary["node"]["dropped_at"][dropped] - cut_wall <= 2 * swap_s, summary["node"]
        else:  # cut off: complete rows up to its end, and no summary (it did not finish)
            assert rows == list(range(1, len(rows) + 1)) and rows, (i, rows)
            assert not node.exists()
    assert leftovers(proc.pid) == [] and host_network() == before
