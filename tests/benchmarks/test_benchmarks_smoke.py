"""The benchmarks run end to end in ``--quick`` mode (2 real Gloo ranks, the small model) and
write their JSON: machine description, settings, one row per case with positive measurements.
These check that the benchmarks work, not how fast anything is (no timing is asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from support import ROOT, run

pytestmark = pytest.mark.slow


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_benchmark(name: str, tmp_path: Path, *extra: str, timeout: float = 240) -> dict:
    out = tmp_path / f"{name}.json"
    result = run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick", "--json", str(out), *extra],
                 timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    data = json.loads(out.read_text())
    assert data["benchmark"] == name
    assert {"cpu_count", "torch", "device", "platform"} <= set(data["machine"])
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["device"] == "cpu"
    assert data["settings"]["nprocs"] and data["rows"]
    return data


def measured(rows: list) -> list:
    return [r for r in rows if "skipped" not in r]


def test_comm_quick(tmp_path):
    data = run_benchmark("comm", tmp_path, "--plot", str(tmp_path / "comm.png"))
    assert (tmp_path / "comm.png").read_bytes().startswith(PNG_SIGNATURE)
    again = run([sys.executable, str(ROOT / "benchmarks" / "comm.py"), "--from-json", str(tmp_path / "comm.json"),
                 "--plot", str(tmp_path / "again.png")], timeout=120)  # redrawn without measuring
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "again.png").read_bytes().startswith(PNG_SIGNATURE)
    bad = run([sys.executable, str(ROOT / "benchmarks" / "comm.py"), "--from-json", str(tmp_path / "missing.json"),
               "--plot", str(tmp_path / "bad.png")], timeout=120)
    assert bad.returncode == 2 and "missing.json" in bad.stderr.splitlines()[-1]
    assert not (tmp_path / "bad.png").exists()
    rows = measured(data["rows"])
    assert {r["case"] for r in rows} == {"allreduce-param", "sgp-1peer", "crossover-coarse", "crossover-fine"}
    skipped = {r["case"] for r in data["rows"] if "skipped" in r}
    assert skipped == {"sgp-2peers", "hierarchical-2"}  # they need more than 2 ranks
    for r in rows:
        assert r["nproc"] == 2 and r["model"] == "small_cnn"
        for key in ("seconds", "raw_seconds", "ratio_to_raw", "bytes_sent", "bytes_recv", "payload_bytes"):
            assert r[key] > 0, (r["case"], key)
        assert len(r["samples"]) == len(r["raw_samples"]) == data["settings"]["repeats"]
    # every algorithm sends the model's bytes per round at n = 2 (all-reduce: 2(n-1)/n = 1)
    assert all(r["volume_ratio"] == pytest.approx(1.0, abs=0.02) for r in rows)
    goals = {g["goal"] for g in data["goals"]}
    assert any("crossover-fine / raw" in g for g in goals) and any("2(n-1)/n" in g for g in goals)


def test_emulated_cluster_flags(tmp_path):
    """``--emulate-nodes``/``--link-rate`` (shared by every benchmark that starts its ranks): bad
    values are refused with one line and exit code 2 before anything starts; as root, one quick
    comm run on 2 emulated nodes says so in its JSON and reports what each node's link carried."""
    from crossover_sgd.errors import ConfigError
    from crossover_sgd.runtime.emulation import check_available

    script = str(ROOT / "benchmarks" / "comm.py")
    for argv, words in ((["--emulate-nodes", "3", "--link-rate", "1gbit"], "--emulate-nodes 3 is invalid with --nprocs 2"),
                        (["--emulate-nodes", "2"], "needs --link-rate"),
                        (["--emulate-nodes", "2", "--link-rate", "fast"], "'fast' is not a rate"),
                        (["--emulate-nodes", "1", "2", "--link-rate", "1gbit"], "2 values for 1 world sizes")):
        result = run([sys.executable, script, "--quick", *argv], timeout=120)
        assert result.returncode == 2 and words in result.stderr.splitlines()[-1], (argv, result.stderr)
    try:
        check_available()
    except ConfigError as exc:  # not root, or no ip/tc: refused with the line that says what is missing
        result = run([sys.executable, script, "--quick", "--emulate-nodes", "2", "--link-rate", "1gbit"], timeout=120)
        assert result.returncode == 2 and result.stderr.splitlines()[-1] == f"comm.py: error: {exc}"
        return
    data = run_benchmark("comm", tmp_path, "--emulate-nodes", "2", "--link-rate", "1gbit", "--cases", "crossover-fine")
    assert data["machine"]["emulated_cluster"] == [{"nproc": 2, "nodes": 2, "ranks_per_node": 1, "link_rate": "1gbit",
                                                    "link_rate_bits_per_s": 10 ** 9}]
    (row,) = measured(data["rows"])
    assert row["ranks_per_node"] == 1 and row["raw_messages"] >= 1 and row["seconds"] > 0
    for key in ("link_bytes_sent", "link_bytes_recv", "raw_link_bytes_sent"):  # every byte crosses the link
        assert row[key] >= row["payload_bytes"], key
    assert [g["goal"] for g in data["goals"]][0].startswith("crossover-fine / raw <= 1.1")


def test_overlap_quick(tmp_path):
    data = run_benchmark("overlap", tmp_path)
    rows = measured(data["rows"])
    assert {r["case"]: r["mode"] for r in rows} == {"sgp-1peer": "sequential", "sgp-overlap": "overlapped",
                                                    "crossover-fine": "sequential",
                                                    "crossover-overlap": "overlapped"}
    for r in rows:
        for key in ("compute_s", "communication_s", "step_s", "ratio_to_max", "ratio_to_sum"):
            assert r[key] > 0, (r["case"], key)
    assert [g["case"] for g in data["goals"]] == ["sgp-overlap", "crossover-overlap"]


def test_throughput_quick(tmp_path):
    data = run_benchmark("throughput", tmp_path)
    rows = measured(data["rows"])
    single = {r["case"] for r in rows if r["nproc"] == 1}
    assert single == {"none", "allreduce"}  # the Trainer against the hand-written loop on one process
    assert {r["case"] for r in rows if r["nproc"] == 2} == {"none", "allreduce", "crossover-fine"}
    for r in rows:
        for key in ("images_per_s", "plain_images_per_s", "ratio_to_plain", "step_s"):
            assert r[key] > 0, (r["case"], key)
    assert {g["case"] for g in data["goals"]} == {"none", "allreduce"}


def test_consensus_sim_quick(tmp_path):
    """Pure NumPy, one process: every schedule case at both sizes, rates and gaps in range."""
    out = tmp_path / "consensus_sim.json"
    result = run([sys.executable, str(ROOT / "benchmarks" / "consensus_sim.py"), "--quick", "--json", str(out)],
                 timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["benchmark"] == "consensus_sim" and data["settings"]["sizes"] == [64, 256]
    assert {(r["case"], r["n"]) for r in data["rows"]} == {(c, n) for c in data["settings"]["cases"] for n in (64, 256)}
    for r in data["rows"]:
        assert r["seconds"] > 0 and 0 <= r["empirical_rate"] < 1 and 0 < r["spectral_gap"] <= 1, r
        assert r["final_error"] < 1, r  # the replicas moved towards their average
    bad = run([sys.executable, str(ROOT / "benchmarks" / "consensus_sim.py"), "--sizes", "1"], timeout=60)
    assert bad.returncode == 2 and "--sizes must be >= 2" in bad.stderr.splitlines()[-1]


def test_ps_round_quick(tmp_path):
    """Four real training runs of the command line (localsgd and osp, without and with a slow server
    link): per run its rounds, accuracy and bytes; the overlap rows and goal."""
    keep = tmp_path / "runs"
    data = run_benchmark("ps_round", tmp_path, "--keep", str(keep), "--algorithms", "localsgd", "osp", timeout=420)
    assert data["settings"]["overlap_goal"] == 1.1
    runs = {r["algorithm"]: r for r in data["rows"] if r["kind"] == "run"}
    assert list(runs) == ["localsgd", "osp"]
    for algorithm, r in runs.items():
        assert r["rounds"] > 1 and r["global_iterations"] == 89, r  # 1 worker, 1 epoch of batches of 16
        assert r["round_s_mean"] > 0 and r["train_wall_s"] > 0 and 0 < r["final_acc"] <= r["best_acc"] <= 1, r
        assert r["time_to_target_s"] is None or r["time_to_target_s"] > 0
        assert (keep / algorithm / "summary.json").is_file()
    assert runs["localsgd"]["bytes_sent_per_worker"] > 0 and runs["localsgd"]["round_s_median"] > 0
    overlaps = {r["algorithm"]: r for r in data["rows"] if r["kind"] == "overlap"}
    assert list(overlaps) == ["localsgd", "osp"]
    for r in overlaps.values():
        assert r["delay_s"] == 0.05 and r["intervals"] > 0 and 1 <= r["mean_k"] <= 8
        for key in ("step_s", "compute_step_s", "own_compute_step_s", "comm_s", "ideal_step_s", "ratio_to_max",
                    "ratio_to_sum"):
            assert r[key] > 0, (r["algorithm"], key)
        assert r["comm_s"] >= 0.05  # the reply is held back that long
    assert [g["algorithm"] for g in data["goals"]] == ["osp"] and isinstance(data["goals"][0]["met"], bool)


def test_ps_round_refuses_bad_settings():
    for argv, words in ((["--workers", "0"], "--workers"), (["--target-acc", "2"], "--target-acc")):
        result = run([sys.executable, str(ROOT / "benchmarks" / "ps_round.py"), *argv], timeout=120)
        assert result.returncode == 2 and words in result.stderr.splitlines()[-1], result.stderr


def test_distbelief_refuses_bad_settings():
    """(Its runs are the DistBelief tests' own kind; the figures it printed are in docs/results.md.)"""
    for argv, words in ((["--replicas", "1"], "--replicas"), (["--slow-factor", "-1"], "--slow-factor")):
        result = run([sys.executable, str(ROOT / "benchmarks" / "distbelief.py"), *argv], timeout=120)
        assert result.returncode == 2 and words in result.stderr.splitlines()[-1], result.stderr
