"""``python -m topology`` end to end, in subprocesses; and the package's import hygiene."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from topology import CrossoverSchedule, ExponentialGraph, Graph, HierarchicalSchedule

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topology", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def _int_lists(text: str) -> list[list[int]]:
    return [[int(v) for v in m.split(",")] for m in re.findall(r"\[([\d, ]+)\]", text)]


def test_peers_crossover_prints_the_schedule():
    proc = _run("peers", "--schedule", "crossover", "--n", "8", "--segments", "3", "--rounds", "2", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    sched = CrossoverSchedule(8, 3, seed=0)
    recv = [line for line in proc.stdout.splitlines() if "recv_from" in line]
    send = [line for line in proc.stdout.splitlines() if "send_to" in line]
    assert len(recv) == len(send) == 6
    for t in range(2):
        for s in range(3):
            assert _int_lists(recv[3 * t + s]) == [sched.recv_from(t)[s].tolist()]
            assert _int_lists(send[3 * t + s]) == [sched.peers(t).send_to[s].tolist()]
    assert "round 1" in proc.stdout


def test_peers_no_fairness_prints_send_lists():
    proc = _run("peers", "--schedule", "crossover", "--n", "5", "--segments", "2", "--no-fair", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    pm = CrossoverSchedule(5, 2, seed=0, fair=False).peers(0)
    sends = [line for line in proc.stdout.splitlines() if "sends" in line]
    assert [line.split("sends", 1)[1].strip() for line in sends] == [str(pm.send_lists(s)) for s in range(2)]


def test_peers_exponential_and_hierarchical():
    proc = _run("peers", "--schedule", "exponential", "--n", "8", "--k", "2", "--rounds", "2", "--start-round", "1")
    assert proc.returncode == 0, proc.stderr
    g = ExponentialGraph(8, 2)
    rows = [line for line in proc.stdout.splitlines() if line.strip().startswith("rank")]
    assert len(rows) == 16
    for idx, line in enumerate(rows):
        t, rank = 1 + idx // 8, idx % 8
        assert _int_lists(line) == [g.out_peers(rank, t), g.in_peers(rank, t)]

    proc = _run("peers", "--schedule", "hierarchical", "--n", "8", "--groupnum", "4", "--segments", "3",
                "--segment-bytes", "5,3,3")
    assert proc.returncode == 0, proc.stderr
    plan = HierarchicalSchedule(8, 3, seed=0, groupnum=4, segment_bytes=[5, 3, 3]).inter_node_plan(0)
    for rank, transfers in enumerate(plan):
        line = next(l for l in proc.stdout.splitlines() if l.strip().startswith(f"rank {rank} "))
        for tr in transfers:
            assert f"(segment {tr.segment}, send_to {list(tr.send_to)}, recv_from {tr.recv_from})" in line


def test_peers_graph_prints_neighbours(tmp_path):
    edges = tmp_path / "edges.txt"
    edges.write_text("0 1\n1 2  # comment\n2 3\n")
    for args, graph in [(["--graph", "torus", "--n", "6"], Graph.torus(2, 3)),
                        (["--edge-file", str(edges), "--n", "5"], Graph(5, [(0, 1), (1, 2), (2, 3)]))]:
        proc = _run("peers", "--schedule", "graph", *args)
        assert proc.returncode == 0, proc.stderr
        rows = [line for line in proc.stdout.splitlines() if line.strip().startswith("rank")]
        assert [_int_lists(line) if graph.degree(r) else [] for r, line in enumerate(rows)] == [
            [list(graph.neighbours(r))] if graph.degree(r) else [] for r in range(graph.n)
        ]


def test_simulate_writes_table_json_and_plot(tmp_path):
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    proc = _run("simulate", "--schedule", "exponential", "--k", "1", "--n", "4096", "--rounds", "14",
                "--json", str(out_json), "--plot", str(out_png))
    assert proc.returncode == 0, proc.stderr
    table = [line.split() for line in proc.stdout.splitlines() if re.match(r"\s*\d+\s", line)]
    assert [int(row[0]) for row in table] == list(range(15))
    errors = [float(row[1]) for row in table]
    assert errors[0] == 1.0 and errors[11] < errors[0] and errors[12] < 1e-20  # exact after log2(n) rounds
    assert "spectral gap" in proc.stdout
    data = json.loads(out_json.read_text())
    assert data["schedule"] == "exponential" and data["n"] == 4096
    np.testing.assert_allclose(data["consensus_error"], errors, rtol=1e-6, atol=1e-300)
    assert data["spectral_gap"] == 1.0 and data["gap_method"] == "fourier"
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_crossover_without_plot_does_not_import_matplotlib():
    code = ("import sys; from topology.cli import main; "
            "main(['simulate', '--schedule', 'crossover', '--n', '64', '--segments', '2', '--rounds', '5']); "
            "print('matplotlib loaded:', 'matplotlib' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "matplotlib loaded: False" in proc.stdout
    assert "closed-form" in proc.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["peers", "--schedule", "crossover", "--n", "0"], "0 is invalid"),
        (["simulate", "--schedule", "exponential", "--n", "8", "--k", "8"], "k=8"),
        (["simulate", "--schedule", "exponential", "--n", "8", "--k", "0"], "0 is invalid"),
        (["peers", "--schedule", "crossover", "--n", "4", "--segments", "0"], "segments must be >= 1"),
        (["peers", "--schedule", "hierarchical", "--n", "8", "--groupnum", "3"], "groupnum=3 does not divide n=8"),
        (["peers", "--schedule", "mesh", "--n", "4"], "'mesh'"),
        (["peers", "--schedule", "ring", "--n", "four"], "'four'"),
        (["peers", "--schedule", "graph", "--n", "4"], "exactly one of graph"),
        (["peers", "--schedule", "graph", "--n", "4", "--edge-file", "{tmp}/bad.txt"], "bad.txt, line 2: self-loop"),
        (["peers", "--schedule", "graph", "--n", "4", "--edge-file", "{tmp}/missing.txt"], "No such file"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, needle, tmp_path):
    (tmp_path / "bad.txt").write_text("0 1\n1 1\n")
    proc = _run(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("python -m topology") and "error:" in lines[0]
    assert needle in lines[0]


def test_package_never_imports_torch():
    for path in sorted((REPO_ROOT / "topology").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            assert not any(n.split(".")[0] in {"torch", "crossover_sgd", "scipy"} for n in names), path
    code = "import sys, topology; print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr
