"""scripts/gpu/gpu_check.py without a GPU (these tests run on every machine, a GPU one included:
they hide its GPUs with ``CUDA_VISIBLE_DEVICES=``).

Without a CUDA GPU the script refuses: one line on stderr naming the cause, exit code 2, nothing
on stdout and no JSON file (not even an empty or partial one). ``--cpu-dry-run`` runs its whole
plumbing on the CPU (tests collected and skipped, both benchmarks at tiny sizes) and writes one
complete JSON.
"""

from __future__ import annotations

import json
import sys

import pytest

from gpu_support import error_lines, run_bounded
from support import ROOT, child_env

SCRIPT = ROOT / "scripts" / "gpu" / "gpu_check.py"


def no_gpu_env(tmp_path) -> dict:
    return child_env({"CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path / "out")})


@pytest.mark.parametrize("json_arg", [False, True], ids=["default-json", "json-flag"])
def test_without_a_gpu_the_check_refuses_in_one_line_and_writes_nothing(tmp_path, json_arg):
    (tmp_path / "out").mkdir()
    target = tmp_path / "deeper" / "check.json"
    args = [sys.executable, str(SCRIPT)] + (["--json", str(target)] if json_arg else [])
    result = run_bounded(args, timeout=120, env=no_gpu_env(tmp_path), cwd=str(tmp_path))
    lines = error_lines(result.stderr)
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gpu_check: error: no CUDA GPU is visible"), lines[0]
    assert "CUDA_VISIBLE_DEVICES=''" in lines[0]
    assert result.stdout == ""
    assert list((tmp_path / "out").iterdir()) == []  # no $OUT/gpu_check.json, no temporary file
    assert not (tmp_path / "gpu_check.json").exists() and not (tmp_path / "deeper").exists()


def test_help_needs_no_gpu():
    result = run_bounded([sys.executable, str(SCRIPT), "--help"], timeout=60,
                         env=child_env({"CUDA_VISIBLE_DEVICES": ""}))
    assert result.returncode == 0 and "--budget" in result.stdout


@pytest.mark.slow
def test_cpu_dry_run_writes_one_complete_json(tmp_path):
    target = tmp_path / "check.json"
    result = run_bounded([sys.executable, str(SCRIPT), "--cpu-dry-run", "--json", str(target), "--budget", "400",
                          "--fp32-budget", "60"],
                         timeout=420, env=child_env({"CUDA_VISIBLE_DEVICES": ""}))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(target.read_text())
    assert report["complete"] and report["ok"] and report["dry_run"]
    assert [p.name for p in tmp_path.iterdir()] == ["check.json"]  # no temporary file left
    tests = report["steps"]["pytest"]["results"]
    assert tests["source"] == "junit" and tests["failed"] == tests["errors"] == tests["passed"] == 0
    assert tests["skipped"] >= 20
    assert all("needs a CUDA GPU" in s["reason"] or "needs 2 GPUs" in s["reason"] for s in tests["skips"])
    assert {r["optimizer"] for r in report["steps"]["lars_step"]["result"]["rows"]} >= {"sgd-foreach", "reference"}
    for name in ("throughput_amp_bf16", "throughput_fp32"):
        cases = [r["case"] for r in report["steps"][name]["result"]["rows"]]
        assert cases == ["none", "allreduce"], cases
    assert report["summary"]["tests"]["skipped"] == tests["skipped"]
    assert json.loads(result.stdout)["ok"] is True
