"""AllReduce-SGD with n real Gloo processes equals one process training on the union of the
ranks' batches (same initial weights, gradient accumulation and momentum included); and gradient
accumulation equals one batch as large as the accumulated micro-batches.

These are identities of exact arithmetic, checked in float64 (``--dtype float64``) to tolerances
that only float64 rounding could reach (rtol 1e-10, atol 1e-12). The runs being compared sum the
same 64 per-sample gradients in different orders (4 ranks x 2 micro-batches of 8, 2 x 32, 1 x 64),
so they differ by rounding alone, ~1e-16 relative per operation. That is safe over 44 steps of a
ReLU network because a ReLU takes the other side only when its pre-activation lies within that
rounding (~1e-16) of zero; among the ~2e7 pre-activations of a run (44 steps x 64 samples x 6144
units) the chance of one such is ~1e-8. Without such flips the dynamics are smooth, and the
rounding differences stay tiny: measured at most 4.4e-16 absolute (2.5e-12 relative, on entries
near zero), more than 2000 times inside the tolerance (|difference| <= atol + rtol |value|).

In float32 the same comparison is a coin toss: rounding of ~1e-7 flips the odd ReLU whose
pre-activation is that close to zero, each flip changes one sample's gradient by O(1), and 44
steps amplify that to ~1e-4 (measured: 1.6e-4 between accumulation and one large batch) -- which
is why these tests do not run in float32.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from support import cli

pytestmark = pytest.mark.slow

COMMON = ["--epochs", "2", "--lr", "0.05", "--momentum", "0.9", "--nesterov", "True",
          "--weight-decay", "1e-4", "--lr-schedule", "cosine", "--warmup-epochs", "0.5", "--seed", "3",
          "--dtype", "float64"]
#: What float64 rounding can reach over these 44 steps, with a wide margin (see the module docstring).
EXACT = dict(rtol=1e-10, atol=1e-12)


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
    assert all(t.dtype == torch.float64 for t in state["model_state"].values() if t.is_floating_point())
    return state


def test_accumulation_equals_one_batch_of_the_accumulated_size(tmp_path, single_process):
    """--local-itr 2 x batch 32 reads the same 64 samples per step as --local-itr 1 x batch 64;
    with the loss divided by local_itr the gradients, and so every step, are the same (to float64
    rounding); not dividing by local_itr (twice the gradient) would move the run by ~0.1."""
    out = tmp_path / "run"
    result = cli("train", *COMMON, "--local-itr", "1", "--batch-size", "64", "--out", str(out))
    assert result.returncode == 0, result.stderr
    (state,) = final_states(out, 1)
    assert state["step"] == single_process["step"] == 44
    for name, tensor in state["model_state"].items():
        torch.testing.assert_close(tensor, single_process["model_state"][name], **EXACT,
                                   msg=f"{name}: accumulated micro-batches differ from one large batch")


@pytest.mark.parametrize("sync_grad", ["True", "False"])
def test_allreduce_matches_single_process_on_the_union_of_batches(tmp_path, single_process, sync_grad):
    """sync_grad True averages gradients; False lets every rank step with its own gradient and
    local momentum, then averages parameters: both equal the single process on the union of the
    batches (the momentum recursion is linear, so the average of the ranks' buffers follows it)."""
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
            torch.testing.assert_close(tensor, reference[name], **EXACT,
                                       msg=f"{name} differs from the single-process run")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 4 and summary["global_batch"] == 64
    payload = sum(t.numel() * t.element_size() for t in reference.values())  # 8 bytes per float64
    per_round = 2 * 3 * payload // 4  # ring all-reduce volume of the parameters
    assert summary["comm"]["bytes_sent"] == pytest.approx(44 * per_round, rel=0.01)
