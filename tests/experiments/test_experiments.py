"""``crossover-sgd experiment``: mixing at scale (simulated, fast); learning scalability: test_scalability.py."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from support import run

from crossover_sgd.experiments import build_parser, mixing
from crossover_sgd.experiments import run as run_experiment


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


def test_spread_skips_missing_values():
    from crossover_sgd.experiments.tables import spread

    assert spread([0.9, 0.8, None])["mean"] == pytest.approx(0.85)
