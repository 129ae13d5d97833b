"""``crossover-sgd experiment noniid``: the peer-to-peer family on non-IID nodes against one node.

The tables, the learning-rate grid and the bookkeeping run on made-up records (fast); one real
run through the command line (2 nodes, 1 seed, 1 epoch, 2 methods) checks the outputs' shape."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from support import run

from crossover_sgd.errors import ConfigError
from crossover_sgd.experiments import build_parser, noniid
from crossover_sgd.experiments import run as run_experiment


def experiment(*args: str, timeout: float = 240):
    return run([sys.executable, "-m", "crossover_sgd.experiments", *args], timeout=timeout)


def fake_record(method, lr, seed, accs, vals=None, loss=0.5):
    vals = vals or accs
    return {"method": method, "lr": lr, "seed": seed, "algorithm": method, "world_size": len(accs), "epochs": 2,
            "steps": 10, "steps_per_epoch": 5, "wall_time_s": 1.0, "process_time_s": 2.0,
            "nodes": [{"node": f"node{i}", "final_test_acc": a, "final_val_acc": v, "final_val_loss": 1 - v,
                       "final_test_loss": 0.3,
                       "final_train_loss": loss, "epochs": [1, 2], "test_acc_series": [a / 2, a]}
                      for i, (a, v) in enumerate(zip(accs, vals))]}


# ------------------------------------------------------------------------------------------ fast
def test_lr_flags():
    lrs = noniid.parse_lrs(["dsgd=0.5,1", "single=0.2"], ["dsgd", "pdmm-isvr"])
    assert lrs == {"single": [0.2], "dsgd": [0.5, 1.0], "pdmm-isvr": [noniid.DEFAULT_LRS["pdmm-isvr"]]}
    assert noniid.parse_lrs(["0.1"], ["cadmm"]) == {"single": [0.1], "cadmm": [0.1]}
    assert noniid.parse_lrs(["0.1", "cadmm=0.3"], ["cadmm"])["cadmm"] == [0.3]  # later items win
    for bad in ("sgd=0.1", "dsgd=x", "dsgd=0", "dsgd=1,1", "dsgd="):
        with pytest.raises(ConfigError):
            noniid.parse_lrs([bad], ["dsgd"])


def test_flags_of_the_runs():
    settings = noniid.Settings(nodes=4, epochs=3, train_args=["--eval-every", "1"])
    single = settings.train_flags(noniid.RunSpec("single", 0.3, 1))
    assert single[:4] == ["--nproc", "1", "--algorithm", "allreduce"] and "--partition" not in single
    p2p = settings.train_flags(noniid.RunSpec("pdmm-isvr", 3.0, 2))
    assert p2p[:8] == ["--nproc", "4", "--algorithm", "pdmm-isvr", "--partition", "noniid", "--graph", "ring"]
    assert p2p[p2p.index("--lr") + 1] == "3" and p2p[p2p.index("--seed") + 1] == "2"
    assert p2p[p2p.index("--momentum") + 1] == "0" and p2p[-2:] == ["--eval-every", "1"]
    assert noniid.RunSpec("pdmm-isvr", 3.0, 2).key == "pdmm-isvr/lr3-s2"


def test_pick_breaks_ties_by_own_val_loss_then_the_smaller_lr():
    a, b = fake_record("dsgd", 1.0, 0, [0.9, 0.9]), fake_record("dsgd", 2.0, 0, [0.8, 0.8])
    for n in b["nodes"]:  # the same own accuracy as a, a lower own loss
        n["final_val_acc"], n["final_val_loss"] = 0.9, 0.05
    assert noniid.pick_lr([a, b]) == 2.0
    for n in b["nodes"]:
        n["final_val_loss"] = 0.1  # a full tie: the smaller lr
    assert noniid.pick_lr([b, a]) == 1.0
    assert noniid.pick_lr([]) is None


def test_aggregate_gap_worst_node_and_table():
    records = [fake_record("single", 0.3, 0, [0.98]), fake_record("single", 0.3, 1, [0.96]),
               fake_record("dsgd", 1.0, 0, [0.9, 0.8], vals=[0.95, 0.9]), fake_record("dsgd", 1.0, 1, [0.7, 1.0])]
    rows = noniid.aggregate(records, ["dsgd", "cadmm"])
    assert [r["method"] for r in rows] == ["single", "dsgd"]  # a method without runs has no row
    single, dsgd = rows
    assert single["test_acc_mean"] == pytest.approx(0.97) and single["gap_to_single"] == pytest.approx(0.0)
    assert dsgd["values"] == 4 and dsgd["seeds"] == 2 and dsgd["nodes"] == 2
    assert dsgd["test_acc_mean"] == pytest.approx(0.85) and dsgd["gap_to_single"] == pytest.approx(-0.12)
    assert (dsgd["test_acc_min"], dsgd["test_acc_max"]) == (0.7, 1.0)
    assert dsgd["worst_node"] == "node0/s1" and dsgd["worst_node_acc"] == 0.7
    text = noniid.markdown(rows, noniid.Settings(), [0, 1], [])
    assert "| `dsgd` | 1 | 2 x 2 | 85.00 ± 12.91 | 70.00 - 100.00 | -12.00 | 70.00 (node0/s1) |" in text
    assert "Learning-rate grid" not in text


def test_grid_is_tuned_on_the_first_seed_by_own_val(tmp_path, monkeypatch):
    """Three lrs of a grid on seed 0; the pick (best own val, not best test) runs the other seeds."""
    made = []
    val = {0.1: 0.5, 0.3: 0.9, 1.0: 0.7}  # own val picks 0.3 ...
    test = {0.1: 0.5, 0.3: 0.6, 1.0: 0.95}  # ... although 1.0 is best on the test set

    def fake_ensure(spec, settings, root):
        made.append(spec.key)
        return "trained", root / "runs" / spec.key

    def fake_collect(spec, run_dir):
        if spec.method == "single":
            return fake_record("single", spec.lr, spec.seed, [0.97], loss=spec.lr)  # the lowest loss: 0.2
        return fake_record(spec.method, spec.lr, spec.seed, [test[spec.lr]] * 2, vals=[val[spec.lr]] * 2)

    monkeypatch.setattr(noniid, "ensure_run", fake_ensure)
    monkeypatch.setattr(noniid, "collect_run", fake_collect)
    out = tmp_path / "grid"
    args = build_parser().parse_args(["noniid", "--nodes", "2", "--seeds", "3", "--methods", "dsgd",
                                      "--lr", "dsgd=0.1,0.3,1", "--lr", "single=0.2,0.5", "--no-plots",
                                      "--out", str(out)])
    assert run_experiment(args) == 0
    assert made == ["single/lr0.2-s0", "single/lr0.5-s0", "single/lr0.2-s1", "single/lr0.2-s2",
                    "dsgd/lr0.1-s0", "dsgd/lr0.3-s0", "dsgd/lr1-s0", "dsgd/lr0.3-s1", "dsgd/lr0.3-s2"]
    data = json.loads((out / "noniid.json").read_text())
    assert [(t["method"], t["lr"], t["picked"]) for t in data["tuning"]] == [
        ("single", 0.2, True), ("single", 0.5, False), ("dsgd", 0.1, False), ("dsgd", 0.3, True),
        ("dsgd", 1.0, False)]
    assert {(r["method"], r["lr"]) for r in data["runs"]} == {("single", 0.2), ("dsgd", 0.3)}
    assert len(data["runs"]) == 6 and not data["failed"]
    assert "## Learning-rate grid (first seed)" in (out / "noniid.md").read_text()


def test_bad_input_is_one_line(tmp_path):
    result = experiment("noniid", "--nodes", "1", "--out", str(tmp_path / "n"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "crossover-sgd: error: --nodes 1 is invalid: a peer-to-peer run needs 2 or more nodes"]
    for argv, words in ((["--methods", "dsgd,sgp"], "--methods"), (["--lr", "dsgd=-1"], "dsgd=-1"),
                        (["--train-args=--graph=torus"], "--graph is set by the experiment itself")):
        with pytest.raises(ConfigError, match=words):
            run_experiment(build_parser().parse_args(["noniid", *argv, "--out", str(tmp_path / "m")]))
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------------------ real runs
@pytest.mark.slow
def test_tiny_run_through_the_command_line(tmp_path):
    out = tmp_path / "noniid"
    argv = ["noniid", "--nodes", "2", "--seeds", "1", "--epochs", "1", "--methods", "dsgd,pdmm-isvr",
            "--out", str(out)]
    result = experiment(*argv)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "noniid.json").read_text())
    assert not data["failed"] and data["settings"]["seeds"] == [0] and data["settings"]["nodes"] == 2
    assert [(r["method"], r["seed"], len(r["nodes"])) for r in data["runs"]] == [
        ("single", 0, 1), ("dsgd", 0, 2), ("pdmm-isvr", 0, 2)]
    for record in data["runs"]:
        for node in record["nodes"]:
            assert 0 <= node["final_test_acc"] <= 1 and node["epochs"] == [1]
            assert (node["final_val_acc"] is None) == (record["method"] == "single")
    rows = list(csv.DictReader(open(out / "noniid.csv")))
    assert [r["method"] for r in rows] == ["single", "dsgd", "pdmm-isvr"]
    assert float(rows[0]["gap_to_single"]) == 0 and int(rows[1]["values"]) == 2
    nodes = list(csv.DictReader(open(out / "nodes.csv")))
    assert [(r["method"], r["node"]) for r in nodes] == [("single", "node0"), ("dsgd", "node0"), ("dsgd", "node1"),
                                                         ("pdmm-isvr", "node0"), ("pdmm-isvr", "node1")]
    text = (out / "noniid.md").read_text()
    assert "| method | lr | nodes x seeds | test acc (%) |" in text and "| `pdmm-isvr` |" in text
    for png in ("noniid_test_acc.png", "noniid_final_nodes.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "runs" / "dsgd" / f"lr{noniid.DEFAULT_LRS['dsgd']:g}-s0" / "nodes" / "node1.csv").is_file()

    again = experiment(*argv, "--no-plots")  # finished runs are reused, not trained again
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count(": reused in") == 3
