"""AllReduce-SGD with n real Gloo processes equals one process training on the union of the
ranks' batches (same initial weights, gradient accumulation and momentum included); and gradient
accumulation equals one batch as large as the accumulated micro-batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from support import cli

pytestmark = pytest.mark.slow

COMMON = ["--epochs", "2", "--lr", "0.05", "--momentum", "0.9", "--nesterov", "True",
          "--weight-decay", "1e-4", "--lr-schedule", "cosine", "--warmup-epochs", "0.5", "--seed", "3"]


def final_states(out: Path, world_size: int) -> list:
    step = json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    folder = out / "checkpoints" / f"step{step:08d}"
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(world_size)]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("single") / "run"
    result = cli("train", *COMMON, "--local-itr", "2", "--batch-size", "32", "--out", str(out))
    assert result.returncode == 0, result.stderr
    (state,) = final_states(out, 1)
    return state


def test_accumulation_equals_one_batch_of_the_accumulated_size(tmp_path, single_process):
    """--local-itr 2 x batch 32 reads the same 64 samples per step as --local-itr 1 x batch 64;
    with the loss divided by local_itr the gradients, and so every step, are the same. Rounding
    differences (1e-8) flip the odd ReLU near zero, which moves the run by up to ~1e-4 over 44
    steps; not dividing by local_itr (twice the gradient) moves it by ~0.1."""
    out = tmp_path / "run"
    result = cli("train", *COMMON, "--local-itr", "1", "--batch-size", "64", "--out", str(out))
    assert result.returncode == 0, result.stderr
    (state,) = final_states(out, 1)
    assert state["step"] == single_process["step"] == 44
    for name, tensor in state["model_state"].items():
        torch.testing.assert_close(tensor, single_process["model_state"][name], rtol=1e-3, atol=1e-3,
                                   msg=f"{name}: accumulated micro-batches differ from one large batch")


@pytest.mark.parametrize("sync_grad", ["True", "False"])
def test_allreduce_matches_single_process_on_the_union_of_batches(tmp_path, single_process, sync_grad):
    out = tmp_path / "run"
    result = cli("train", *COMMON, "--local-itr", "2", "--nproc", "4", "--batch-size", "8",
                 "--sync-grad", sync_grad, "--out", str(out))
    assert result.returncode == 0, result.stderr
    states = final_states(out, 4)
    assert states[0]["step"] == single_process["step"] == 44  # 22 steps per epoch in both runs
    reference = single_process["model_state"]
    for rank, state in enumerate(states):
        for name, tensor in state["model_state"].items():
            torch.testing.assert_close(tensor, states[0]["model_state"][name], rtol=0, atol=0,
                                       msg=f"rank {rank} differs from rank 0 in {name}")
            torch.testing.assert_close(tensor, reference[name], rtol=1e-4, atol=2e-6,
                                       msg=f"{name} differs from the single-process run")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 4 and summary["global_batch"] == 64
    payload = sum(t.numel() * 4 for t in reference.values())
    per_round = 2 * 3 * payload // 4  # ring all-reduce volume of the parameters
    assert summary["comm"]["bytes_sent"] == pytest.approx(44 * per_round, rel=0.01)
