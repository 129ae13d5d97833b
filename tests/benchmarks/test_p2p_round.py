"""benchmarks/p2p_round.py runs end to end at its smallest size (``--quick``: 2 real Gloo ranks,
the small CNN, 2 repeats) and writes its JSON: machine, settings, one row per peer-to-peer method
with its round against the raw exchange and, for the methods with a local update of their own,
that update against SGD's step; the goals. No timing is asserted: only that every measurement
and ratio is a positive finite number."""

from __future__ import annotations

import json
import math
import sys

import pytest

from support import ROOT, run

pytestmark = pytest.mark.slow

METHODS = {"dsgd", "gossip-sgd", "pdmm-sgd", "admm-sgd", "pdmm-isvr", "admm-isvr", "cadmm"}
LOCAL = {"pdmm-sgd", "admm-sgd", "pdmm-isvr", "admm-isvr", "cadmm"}


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_p2p_round_quick(tmp_path):
    out = tmp_path / "p2p_round.json"
    result = run([sys.executable, str(ROOT / "benchmarks" / "p2p_round.py"), "--quick", "--repeats", "2",
                  "--rounds", "3", "--local-steps", "3", "--json", str(out)], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "x raw" in result.stdout and "x SGD" in result.stdout  # the printed table
    data = json.loads(out.read_text())
    assert data["benchmark"] == "p2p_round"
    assert {"cpu_count", "torch", "device", "platform"} <= set(data["machine"])
    settings = data["settings"]
    assert settings["nprocs"] == [2] and settings["models"] == ["small_cnn"] and settings["repeats"] == 2
    assert settings["goals"] == {"round_to_raw": 1.2, "local_to_sgd": 2.0}
    assert "default process group" in settings["raw_baseline"] and "foreach=True" in settings["sgd_baseline"]

    rows = {r["method"]: r for r in data["rows"]}
    assert set(rows) == METHODS and len(data["rows"]) == len(METHODS)
    for method, r in rows.items():
        assert r["model"] == "small_cnn" and r["nproc"] == 2 and r["neighbours"] == 1 and r["graph"] == "ring"
        for key in ("round_s", "round_s_min", "raw_s", "raw_s_min", "ratio_to_raw", "ratio_to_raw_min",
                    "message_bytes", "bytes_sent_per_round", "raw_bytes_sent_per_round"):
            assert positive_finite(r[key]), (method, key, r[key])
        assert len(r["round_samples"]) == len(r["raw_samples"]) == 2
        # the raw baseline moves exactly the bytes the method sends per round
        assert r["bytes_sent_per_round"] == r["raw_bytes_sent_per_round"] == r["message_bytes"] * r["neighbours"]
        if method in LOCAL:
            for key in ("local_s", "local_s_min", "sgd_s", "sgd_s_min", "ratio_to_sgd", "ratio_to_sgd_min"):
                assert positive_finite(r[key]), (method, key, r[key])
            assert len(r["local_samples"]) == len(r["sgd_samples"]) == 2
        else:
            assert "ratio_to_sgd" not in r and "own step" in r["local_update"]
    # PDMM-SGD/ADMM-SGD send the dual and the model; the others one parameter-sized vector or the model
    assert rows["pdmm-sgd"]["message_bytes"] == 2 * rows["pdmm-isvr"]["message_bytes"]

    goals = data["goals"]
    assert {(g["method"], g["goal"].split(" / ")[0]) for g in goals} == (
        {(m, "after_step") for m in METHODS} | {(m, "optimizer_step") for m in LOCAL})
    for g in goals:
        assert positive_finite(g["value"]) and positive_finite(g["value_min"]) and isinstance(g["met"], bool)


def test_p2p_round_refuses_bad_counts():
    for argv, words in ((["--nprocs", "1"], "2 or more ranks"), (["--rounds", "0"], "--rounds")):
        result = run([sys.executable, str(ROOT / "benchmarks" / "p2p_round.py"), *argv], timeout=120)
        assert result.returncode == 2 and words in result.stderr.splitlines()[-1], result.stderr
