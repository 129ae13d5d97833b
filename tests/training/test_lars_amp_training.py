"""LARS, mixed precision and guarded steps in the training loop, with real processes."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from crossover_sgd.runtime.local_launcher import launch_local
from support import ROOT, cli, read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    out = tmp_path_factory.mktemp("guarded")
    assert launch_local(4, [sys.executable, str(ROOT / "tests" / "workers" / "guarded_steps.py"), str(out)]) == 0
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(4)]


@pytest.mark.parametrize("variant", ["nonfinite-sgd", "nonfinite-lars"])
def test_nonfinite_step_is_skipped_and_never_reaches_peers(guarded, variant):
    for rank, result in enumerate(r[variant] for r in guarded):
        assert result["finite"], f"rank {rank} holds non-finite parameters after the crossover round"
        assert result["skipped"] == (1 if rank == 1 else 0)
        assert result["momentum_unchanged"] == (rank == 1)  # the skipped step left the momentum alone
        assert result["weight_decay"] == pytest.approx(result["expected_weight_decay"])  # --wd-schedule


def test_lars_norm_sync_uses_norms_of_group_sums(guarded):
    for result in (r["norm-sync"] for r in guarded):
        assert result["w_error"] < 1e-5 and result["g_error"] < 1e-5
        assert result["local_differs"] > 0  # the hook did replace the local norms


def final_acc(out):
    return json.loads((out / "summary.json").read_text())["final_val_acc"]


def test_large_batch_lars_poly_bf16_matches_small_batch_sgd(tmp_path, default_job):
    """Against small-batch SGD: the default job (``train --nproc 4``: 20 epochs, batch 32 per rank,
    momentum SGD, cosine), the session's ``default_job`` run (shared with tests/cli/test_default_job.py)."""
    small, cwd = default_job
    assert small.returncode == 0, small.stderr[-2000:]
    (sgd_out,) = list((cwd / "runs").iterdir())
    large = cli("train", "--nproc", "4", "--batch-size", "64", "--lars", "True", "--lr", "8", "--amp", "bf16",
                "--lr-schedule", "poly", "--warmup-epochs", "5", "--wd-schedule", "True", "--epochs", "30",
                "--out", str(tmp_path / "lars"), timeout=240)
    assert large.returncode == 0, large.stderr[-2000:]
    sgd_acc, lars_acc = final_acc(sgd_out), final_acc(tmp_path / "lars")
    summary = json.loads((tmp_path / "lars" / "summary.json").read_text())
    assert summary["global_batch"] == 256 and summary["config"]["amp"] == "bf16"
    assert min(lars_acc) >= 0.95, lars_acc
    assert abs(min(lars_acc) - min(sgd_acc)) <= 0.03, (lars_acc, sgd_acc)
    rows = read_metrics(tmp_path / "lars" / "metrics_rank0.csv")
    assert float(rows[-1]["lr"]) == pytest.approx(8 * 0.0025, rel=1e-6)  # poly end value, held


@pytest.mark.parametrize("args,expected", [
    (["--lars", "True", "--lars-coef", "-0.001"], "--lars-coef -0.001"),
    (["--lr", "-0.1"], "--lr -0.1"),
    (["--momentum", "-0.9"], "--momentum -0.9"),
    (["--momentum", "1.5"], "--momentum 1.5"),
    (["--weight-decay=-1e-4"], "--weight-decay -0.0001"),
    (["--warmup-epochs", "30", "--epochs", "20"], "--warmup-epochs 30"),
    (["--amp", "fp16", "--device", "cpu"], "--amp fp16"),
    (["--amp", "fp8"], "--amp 'fp8'"),
    (["--sync-lars-group-size", "2", "--nproc", "2"], "needs --lars True"),
], ids=["eta", "lr", "momentum", "momentum>=1", "wd", "warmup", "fp16-cpu", "amp-mode", "sync-without-lars"])
def test_bad_optimisation_input_is_one_line(tmp_path, args, expected):
    result = cli("train", *args, "--out", str(tmp_path / "run"), timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


def test_legacy_fp16_amp_on_cpu_is_refused_with_a_hint(tmp_path):
    from support import run

    result = run([sys.executable, "imagenet_test.py", "--allreduce", "True", "--amp", "True", "--dataset", "digits",
                  "--model", "small_cnn", "--device", "cpu", "--out", str(tmp_path / "run")], timeout=60)
    assert result.returncode == 2 and "use --amp bf16" in result.stderr
