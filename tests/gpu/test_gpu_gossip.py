"""Gossip rounds (SGP, Crossover-SGD) with CUDA tensors, on two real processes
(worker: tests/gpu/gpu_gossip_worker.py, started by the package's local launcher).

Which wire a round can use with CUDA tensors (torch's backend table and sources):

* NCCL sends CUDA tensors, but refuses two ranks on one GPU ("duplicate GPU"): the real wire needs
  two GPUs (``test_gossip_rounds_over_nccl_on_two_gpus``, skipped on one);
* Gloo takes two ranks on one GPU, but its send/recv does not support CUDA tensors (backend
  table: send/recv GPU unsupported; ``ProcessGroupGloo::send`` hands the tensor's raw device
  pointer to its TCP transport). So on one GPU the worker stages each CUDA message through host
  memory (``test_gossip_rounds_on_one_gpu_with_a_host_staged_wire``): the algorithms' own work
  (flat buffers, the finite check, the wire dtype cast, the averaging, overlap's snapshots and
  late mixing, push-sum's weights) runs on the GPU, the bytes travel over Gloo;
* the package today, unstaged, with ``--backend gloo --device cuda``
  (``test_unstaged_gloo_rounds_with_cuda_tensors_fail_loudly_or_are_correct``): a wrong value or a
  crash is a failure, an exception is accepted (the CLI test asks for a refusal up front).

With two ranks every variant ends with both replicas at the mean of the initial ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from gpu_support import GPU_MARKS, run_bounded
from support import ROOT

pytestmark = GPU_MARKS

WORKER = ROOT / "tests" / "gpu" / "gpu_gossip_worker.py"
VARIANTS = ("crossover_segments3", "crossover_overlap", "crossover_bf16_wire", "sgp_1peer")


def launch(out: Path, mode: str):
    code = ("import sys; from crossover_sgd.runtime.local_launcher import launch_local; "
            f"sys.exit(launch_local(2, [sys.executable, {str(WORKER)!r}, {str(out)!r}, {mode!r}]))")
    return run_bounded([sys.executable, "-c", code], timeout=180)


def load(out: Path, mode: str, variant: str):
    return [torch.load(out / mode / variant / f"rank{r}.pt", weights_only=True) for r in range(2)]


def check_mean(states, variant: str) -> None:
    tolerance = dict(rtol=2e-2, atol=3e-2) if "bf16" in variant else dict(rtol=1e-5, atol=1e-5)
    for name in states[0]["initial"]:
        mean = (states[0]["initial"][name] + states[1]["initial"][name]) / 2
        for rank, state in enumerate(states):
            torch.testing.assert_close(state["final"][name], mean, **tolerance,
                                       msg=lambda m: f"{variant}, rank {rank}, {name}: {m}")


def check_rounds(states, variant: str, devices) -> None:
    check_mean(states, variant)
    for rank, state in enumerate(states):
        assert state["devices"] == [devices[rank]], (variant, rank, state["devices"])
        assert state["channels_last"], f"{variant}: rank {rank} lost channels_last"
        assert state["comm"]["rounds"] == 2
        if variant.startswith("crossover") and "bf16" not in variant:  # the model's bytes each round
            assert state["comm"]["bytes_sent"] == 2 * state["param_bytes"] == state["comm"]["bytes_recv"]


@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason="needs 2 GPUs: NCCL refuses two ranks on one GPU (duplicate GPU)")
def test_gossip_rounds_over_nccl_on_two_gpus(tmp_path):
    result = launch(tmp_path, "nccl")
    assert result.returncode == 0, result.stderr[-3000:]
    for variant in VARIANTS:
        check_rounds(load(tmp_path, "nccl", variant), variant, ["cuda:0", "cuda:1"])


def test_gossip_rounds_on_one_gpu_with_a_host_staged_wire(tmp_path):
    result = launch(tmp_path, "gloo-staged")
    assert result.returncode == 0, result.stderr[-3000:]
    for variant in VARIANTS:
        check_rounds(load(tmp_path, "gloo-staged", variant), variant, ["cuda:0", "cuda:0"])


def test_unstaged_gloo_rounds_with_cuda_tensors_fail_loudly_or_are_correct(tmp_path):
    result = launch(tmp_path, "gloo-raw")
    variant = VARIANTS[0]
    files = [tmp_path / "gloo-raw" / variant / f"rank{r}.pt" for r in range(2)]
    if not all(f.is_file() for f in files):
        pytest.fail(f"a rank died without a word (exit {result.returncode}: a crash, not an error); stderr ends:\n"
                    f"{result.stderr[-3000:]}", pytrace=False)
    states = load(tmp_path, "gloo-raw", variant)
    errors = [s.get("error") for s in states]
    if any(errors):  # loud: the test passes, the report names it
        print(f"unstaged Gloo with CUDA tensors raised: {errors}")
        return
    assert result.returncode == 0, result.stderr[-3000:]
    check_rounds(states, variant, ["cuda:0", "cuda:0"])  # silent garbage would fail here
