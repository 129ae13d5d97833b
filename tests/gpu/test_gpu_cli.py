"""Real ``crossover-sgd train`` runs on the GPU, through the command line (``python -m crossover_sgd``).

One rank (NCCL): fp16 with a GradScaler in channels_last on the digits; LARS with bf16; a run
stopped and resumed from its checkpoint; a ResNet in channels_last with bf16 on synthetic data
read by loader workers into pinned memory. Two local ranks on one GPU: NCCL cannot put two ranks
on one GPU, Gloo cannot send CUDA tensors point to point (torch's backend table: send/recv on GPU
unsupported; ProcessGroupGloo::send hands the tensor's raw pointer to Gloo's TCP transport):
such a run must be refused with one line, or (should a backend learn it) train correctly.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from gpu_support import GPU_MARKS, error_lines, run_bounded
from support import read_metrics

pytestmark = GPU_MARKS


def train(out: Path, *args: str, timeout: float = 180):
    return run_bounded([sys.executable, "-m", "crossover_sgd", "train", "--device", "cuda", "--timeout", "30",
                        "--out", str(out), *args], timeout=timeout)


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def check_finished(result, out: Path, min_acc: float) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    summary = summary_of(out)
    assert summary["status"] == "finished" and summary["device"] == "cuda", summary
    assert summary["backend"] == "nccl"
    assert all(a is not None and a >= min_acc for a in summary["final_val_acc"]), summary["final_val_acc"]
    rows = read_metrics(out / "metrics_rank0.csv")
    assert len(rows) == summary["config"]["epochs"]
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    assert "device cuda:0" in (out / "train.log").read_text()
    return summary


def test_fp16_gradscaler_channels_last_run_on_the_digits(tmp_path):
    out = tmp_path / "fp16"
    result = train(out, "--amp", "fp16", "--channels-last", "True", "--epochs", "3")
    summary = check_finished(result, out, min_acc=0.9)
    assert summary["config"]["amp"] == "fp16" and summary["config"]["channels_last"] is True
    rows = read_metrics(out / "metrics_rank0.csv")
    skipped = int(rows[-1]["skipped_steps"])
    assert skipped <= summary["steps_done"] // 10, f"{skipped} of {summary['steps_done']} fp16 steps skipped"


def test_lars_bf16_poly_run_on_the_digits(tmp_path):
    out = tmp_path / "lars"
    result = train(out, "--lars", "True", "--amp", "bf16", "--lr", "8", "--batch-size", "64",
                   "--lr-schedule", "poly", "--warmup-epochs", "1", "--epochs", "6")
    check_finished(result, out, min_acc=0.9)


def test_stopped_and_resumed_fp16_lars_run_ends_like_the_straight_one(tmp_path):
    common = ("--amp", "fp16", "--lars", "True", "--lr", "8", "--batch-size", "64", "--lr-schedule", "poly",
              "--warmup-epochs", "1", "--epochs", "4")
    straight = train(tmp_path / "straight", *common)
    reference = check_finished(straight, tmp_path / "straight", min_acc=0.8)
    stopped = train(tmp_path / "split", *common, "--stop-at-step", "30")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert summary_of(tmp_path / "split")["status"] == "stopped"
    resumed = train(tmp_path / "split", *common, "--resume")
    summary = check_finished(resumed, tmp_path / "split", min_acc=0.8)
    assert summary["steps_done"] == reference["steps_done"]
    # the same run up to GPU non-determinism (cuDNN, atomics): the same accuracy within a few samples
    assert abs(summary["final_val_acc"][0] - reference["final_val_acc"][0]) <= 0.03


def test_resnet18_channels_last_bf16_with_loader_workers_on_synthetic_data(tmp_path):
    out = tmp_path / "resnet"
    result = train(out, "--dataset", "synthetic", "--model", "resnet18", "--image-size", "32",
                   "--synthetic-samples", "512", "--batch-size", "64", "--epochs", "1", "--workers", "2",
                   "--amp", "bf16", "--channels-last", "True", "--lr", "0.05")
    check_finished(result, out, min_acc=0.0)  # random labels: the run, not the accuracy, is checked


def one_gpu_only():
    if torch.cuda.device_count() != 1:
        pytest.skip(f"this machine shows {torch.cuda.device_count()} GPUs; the case is one GPU for two ranks")


def refused_in_one_line_or_trained(result, out: Path) -> None:
    if result.returncode == 0:  # a backend that can: then every rank must have learnt
        accs = summary_of(out)["final_val_acc"]
        assert all(a is not None and a >= 0.8 for a in accs), accs
        return
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("crossover-sgd: error:"), (
        f"exit {result.returncode}; wanted exit 2 and one 'crossover-sgd: error:' line; stderr ends:\n"
        f"{result.stderr[-3000:]}")
    assert not (out / "summary.json").exists()


def test_two_nccl_ranks_on_one_gpu_are_refused_in_one_line(tmp_path):
    one_gpu_only()
    out = tmp_path / "nccl2"
    result = train(out, "--nproc", "2", "--epochs", "3", timeout=150)
    refused_in_one_line_or_trained(result, out)


def test_two_gloo_ranks_gossiping_cuda_tensors_on_one_gpu_are_refused_or_correct(tmp_path):
    one_gpu_only()
    out = tmp_path / "gloo2"
    result = train(out, "--nproc", "2", "--backend", "gloo", "--algorithm", "crossover", "--epochs", "3",
                   timeout=150)
    refused_in_one_line_or_trained(result, out)


def test_two_p2p_nodes_on_one_gpu_stage_their_messages_through_host_memory(tmp_path):
    """The peer-to-peer family sends over per-edge Gloo groups from host buffers (a CUDA model is
    staged): two nodes on one GPU with ``--backend gloo`` train, or are refused in one line."""
    one_gpu_only()
    out = tmp_path / "p2p2"
    result = train(out, "--nproc", "2", "--backend", "gloo", "--algorithm", "pdmm-isvr", "--epochs", "3",
                   timeout=150)
    if result.returncode != 0:
        refused_in_one_line_or_trained(result, out)
        return
    for node in ("node0", "node1"):
        rows = read_metrics(out / "nodes" / f"{node}.csv")
        assert len(rows) == 3 and float(rows[-1]["test_acc"]) >= 0.5, rows[-1]
        assert float(rows[-1]["live_neighbours"]) == 1.0
