"""``crossover-sgd experiment``: mixing at scale (simulated, fast) and learning scalability (real
training runs through the command line, skipped and resumed on a re-run)."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from support import run

from crossover_sgd.experiments import build_parser, mixing
from crossover_sgd.experiments import run as run_experiment
from crossover_sgd.experiments.scalability import Settings, make_variants, plan_runs
from crossover_sgd.experiments.tables import spread


def experiment(*args: str, timeout: float = 240):
    return run([sys.executable, "-m", "crossover_sgd.experiments", *args], timeout=timeout)


# ------------------------------------------------------------------------------------------ mixing
@pytest.mark.parametrize("name", mixing.DEFAULT_TOPOLOGIES)
def test_consensus_error_never_grows(name):
    """Every default topology is doubly stochastic: no round increases the disagreement."""
    for n in (16, 32):
        result = mixing.simulate_topology(mixing.TOPOLOGIES[name], n, rounds=12, segments=4, seed=3)
        errors = result.errors
        assert errors[0] == pytest.approx(1.0)
        assert all(b <= a * (1 + 1e-9) + 1e-28 for a, b in zip(errors, errors[1:])), errors
        assert errors[-1] < 0.5
        assert 0 < result.gap <= 1


def test_mixing_quick_writes_tables_and_plots(tmp_path):
    out = tmp_path / "mixing"
    args = build_parser().parse_args(["mixing", "--quick", "--out", str(out)])
    assert run_experiment(args) == 0
    data = json.loads((out / "mixing.json").read_text())
    assert data["settings"]["sizes"] == [16, 32] and data["settings"]["rounds"] == 10
    rows = list(csv.DictReader(open(out / "mixing.csv")))
    # hierarchical-8 needs 2 nodes of 8: 16 and 32 both qualify; every default topology at both sizes
    assert {(r["topology"], int(r["n"])) for r in rows} == {(t, n) for t in mixing.DEFAULT_TOPOLOGIES for n in (16, 32)}
    ring = [r for r in rows if r["topology"] == "ring"]
    assert float(ring[1]["spectral_gap"]) < float(ring[0]["spectral_gap"])  # the ring mixes worse as N grows
    for key, errors in data["errors"].items():
        assert len(errors) == 11 and errors[0] == pytest.approx(1.0), key
    text = (out / "mixing.md").read_text()
    assert "## Spectral gap" in text and "| crossover |" in text
    for png in ("mixing_error_vs_rounds.png", "mixing_gap_vs_n.png"):
        assert (out / png).stat().st_size > 1000


def test_mixing_bad_input_is_one_line(tmp_path):
    result = experiment("mixing", "--sizes", "1", "--out", str(tmp_path / "m"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["crossover-sgd: error: --sizes: every N must be >= 2"]


# ------------------------------------------------------------------------------------------ scalability
def test_runs_are_planned_once_with_the_lr_rule():
    variants = list(make_variants((2, 4)).values())
    specs = plan_runs(variants, [4, 8], batch_size=16, seeds=[0, 1], batch_sizes=[16, 32], batch_world=8)
    keys = [s.key for s in specs]
    assert len(keys) == len(set(keys))
    assert len(specs) == len(variants) * 2 * 2 + len(variants) * 2  # b=16 at n=8 is shared by both sweeps
    hierarchical4 = [s for s in specs if s.variant.name == "hierarchical-g4"]
    assert {s.variant.skip_reason(s.world_size) is None for s in hierarchical4 if s.world_size == 4} == {False}
    assert Settings(lr_rule="linear", base_lr=0.1, base_batch=128).lr(256) == pytest.approx(0.2)
    assert Settings(lr_rule="sqrt", base_lr=0.1, base_batch=128).lr(512) == pytest.approx(0.2)
    assert Settings(lr_rule="constant").lr(4096) == pytest.approx(0.1)
    assert spread([0.9, 0.8, None])["mean"] == pytest.approx(0.85)


@pytest.mark.slow
def test_scalability_quick_table_and_resume(tmp_path):
    out = tmp_path / "scal"
    result = experiment("scalability", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    text = (out / "scalability.md").read_text()
    assert "| processes (global batch) | allreduce | crossover |" in text
    assert "| 2 (32) |" in text
    rows = list(csv.DictReader(open(out / "scalability.csv")))
    assert {r["variant"] for r in rows} == {"allreduce", "crossover"}
    for r in rows:
        assert 0.5 < float(r["consensus_acc_mean"]) <= 1.0 and int(r["seeds"]) == 1
        assert int(r["global_batch"]) == 32
    data = json.loads((out / "scalability.json").read_text())
    assert len(data["runs"]) == 2 and not data["failed"]
    for record in data["runs"]:
        assert len(record["rank_accs"]) == 2 and len(record["consensus_distance_series"]) == 2
    for png in ("scalability_acc_vs_procs.png", "scalability_consensus_distance.png"):
        assert (out / png).stat().st_size > 1000
    assert not (out / "scalability_acc_vs_batch.png").exists()  # no batch sweep: the same figure

    again = experiment("scalability", "--quick", "--out", str(out), "--no-plots")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count(": reused in") == 2  # finished runs are not trained again
    changed = experiment("scalability", "--quick", "--out", str(out), "--base-lr", "0.3")
    assert changed.returncode == 2 and "holds a run made with other settings" in changed.stderr
