"""One rank of tests/gpu/test_gpu_gossip.py: real gossip rounds of the package's algorithms with
their parameters, flat buffers and messages on the GPU.

Usage: ``gpu_gossip_worker.py OUT MODE`` under the local launcher (2 ranks), MODE one of

* ``nccl``: rank r on ``cuda:r`` with NCCL (needs 2 GPUs), the real wire;
* ``gloo-staged``: both ranks on ``cuda:0`` with Gloo, every CUDA message staged through host
  memory by this worker (``dist.batch_isend_irecv`` wrapped): everything of the round runs on
  the GPU except the wire, which neither backend offers for two ranks on one GPU;
* ``gloo-raw``: both ranks on ``cuda:0`` with Gloo and nothing staged: what the package does
  today with ``--device cuda --backend gloo``. An exception is recorded (``error``), not raised.

Per variant: distinct parameters per rank (a BatchNorm CNN in channels_last), two rounds through
``before_step``/``after_step``/``flush``, and the initial and final tensors (on the CPU), their
devices and strides, and the traffic saved to OUT/MODE/VARIANT/rank{R}.pt.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from crossover_sgd.algorithms import build_algorithm, make_config
from crossover_sgd.runtime.launch import detect_launch
from crossover_sgd.runtime.process_group import init_distributed, shutdown

VARIANTS = {
    "crossover_segments3": {"algorithm": "crossover", "segments": 3},
    "crossover_overlap": {"algorithm": "crossover", "segments": 3, "gossip_overlap": True},
    "crossover_bf16_wire": {"algorithm": "crossover", "segments": 3, "gossip_dtype": "bf16"},
    "sgp_1peer": {"algorithm": "sgp", "sgp_peers": 1},
}
ROUNDS = 2


class _Staged:
    """A receive staged through host memory: waiting copies the host buffer to the device."""

    def __init__(self, request, host: torch.Tensor, device_tensor: torch.Tensor):
        self.request, self.host, self.device_tensor = request, host, device_tensor

    def wait(self, *args, **kwargs):
        result = self.request.wait(*args, **kwargs)
        self.device_tensor.copy_(self.host)
        return result

    def is_completed(self):
        return self.request.is_completed()


def stage_cuda_messages() -> None:
    """Wrap ``dist.batch_isend_irecv`` (which the package's p2p layer calls) so that CUDA tensors
    travel as host copies: sends copy to the host first, receives land on the host and are
    copied to the device when waited for."""
    real = dist.batch_isend_irecv

    def staged(ops):
        host_ops, receives = [], {}
        for i, op in enumerate(ops):
            tensor = op.tensor
            if tensor.is_cuda:
                if op.op in (dist.isend, dist.send):
                    host = tensor.to("cpu")
                else:
                    host = torch.empty(tensor.shape, dtype=tensor.dtype)
                    receives[i] = (host, tensor)
                tensor = host
            host_ops.append(dist.P2POp(op.op, tensor, op.peer, group=op.group, tag=op.tag))
        requests = real(host_ops)
        return [_Staged(r, *receives[i]) if i in receives else r for i, r in enumerate(requests)]

    dist.batch_isend_irecv = staged


def make_model(device: torch.device) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))
    return model.to(device).to(memory_format=torch.channels_last)


def run_variant(ctx, out: Path, name: str, options: dict) -> None:
    torch.manual_seed(0)
    model = make_model(ctx.device)
    algorithm = build_algorithm(ctx, make_config(seed=11, **options))
    algorithm.prepare(model)  # rank 0's weights everywhere...
    generator = torch.Generator().manual_seed(1000 + ctx.rank)
    with torch.no_grad():  # ...then distinct ones per rank, so that mixing shows
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    initial = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
    for _ in range(ROUNDS):
        algorithm.before_step(optimizer)
        algorithm.after_step(optimizer)
    algorithm.flush()
    torch.cuda.synchronize(ctx.device)
    state = {
        "initial": initial,
        "final": {n: p.detach().cpu().clone() for n, p in model.named_parameters()},
        "devices": sorted({str(p.device) for p in model.parameters()}
                          | {str(b.device) for flat in algorithm.flats for b in flat.buffers.values()}),
        "channels_last": all(p.is_contiguous(memory_format=torch.channels_last)
                             for p in model.parameters() if p.dim() == 4),
        "comm": algorithm.comm.as_dict(),
        "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
    }
    (out / name).mkdir(parents=True, exist_ok=True)
    torch.save(state, out / name / f"rank{ctx.rank}.pt")


def main() -> None:
    out, mode = Path(sys.argv[1]) / sys.argv[2], sys.argv[2]
    out.mkdir(parents=True, exist_ok=True)
    info = detect_launch()
    if mode == "nccl":
        device, backend = torch.device("cuda", info.local_rank), "nccl"
    else:
        device, backend = torch.device("cuda", 0), "gloo"
    ctx = init_distributed(info, device=device, backend=backend, timeout_s=30)
    if mode == "gloo-staged":
        stage_cuda_messages()
    try:
        for name, options in VARIANTS.items():
            try:
                run_variant(ctx, out, name, options)
            except Exception as exc:  # noqa: BLE001 - recorded for the test to judge
                if mode != "gloo-raw":
                    raise
                (out / name).mkdir(parents=True, exist_ok=True)
                torch.save({"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                            "traceback": traceback.format_exc()[-3000:]}, out / name / f"rank{ctx.rank}.pt")
                return  # the process group may be broken now: no further variant
    finally:
        shutdown()


if __name__ == "__main__":
    main()
