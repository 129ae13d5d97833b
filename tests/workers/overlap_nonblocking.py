"""One rank of the overlap test (started by tests/algorithms/gossip/test_overlap.py via the local launcher).

With ``--gossip-overlap True``, ``after_step`` posts the round and returns without waiting for the
peer. Rank 1 does not post its round until rank 0's ``after_step`` has returned (it waits for a key
in the rendezvous store that rank 0 sets afterwards): a blocking ``after_step`` on rank 0 would
deadlock and the store wait would time out. Each rank then flushes and saves its parameters.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from crossover_sgd.algorithms import build_algorithm, make_config
from crossover_sgd.runtime.launch import detect_launch
from crossover_sgd.runtime.process_group import init_distributed, shutdown
from crossover_sgd.training.models import build_model


def main() -> None:
    out, algorithm_name = Path(sys.argv[1]), sys.argv[2]
    ctx = init_distributed(detect_launch(), device=torch.device("cpu"), backend="gloo", timeout_s=60)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=timedelta(seconds=20), wait_for_workers=False)
    try:
        torch.manual_seed(0)
        model = build_model("small_cnn", 10, 1, 8)
        algorithm = build_algorithm(ctx, make_config(algorithm=algorithm_name, gossip_overlap=True, segments=2))
        algorithm.prepare(model)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(ctx.rank))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        if ctx.rank == 1:
            store.wait(["overlap-test/rank0-returned"])  # raises after 20 s if rank 0 is blocked
        algorithm.after_step(optimizer)
        if ctx.rank == 0:
            store.set("overlap-test/rank0-returned", "1")
        posted_only = [p.detach().clone() for p in model.parameters()]
        algorithm.flush()
        torch.save({"after_step": posted_only, "flushed": [p.detach().clone() for p in model.parameters()]},
                   out / f"rank{ctx.rank}.pt")
    finally:
        shutdown()


if __name__ == "__main__":
    main()
