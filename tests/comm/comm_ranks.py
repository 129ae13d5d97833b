"""One rank of the tests in tests/comm/ (a real Gloo process; OUT is the first argument).

* ``math``: :func:`average` and :func:`total` over the world and over groups of 4, 2 and 1
  consecutive ranks (4 ranks), on integer-valued float64/float32 tensors; every input, result
  and traffic count goes to OUT/rank{R}.pt for the test to recompute.
* ``kill``: ranks {0, 1} and {2, 3} form groups of 2 and average once (each rank then writes
  OUT/ready{R}); rank 2 averages again with rank 3, which never joins: the test SIGKILLs it, and
  rank 2 must end with the PeerError (its text in OUT/error2.txt, exit code 3). The other ranks
  wait for OUT/stop.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from crossover_sgd.comm import CommStats, FlatParams, average, consecutive_group, group_ranks, total
from crossover_sgd.errors import PeerError
from crossover_sgd.runtime.launch import detect_launch
from crossover_sgd.runtime.process_group import init_distributed, shutdown


def inputs(rank: int):
    """Integer-valued tensors (exact in float32 and float64), different on every rank; one is not
    contiguous (a transposed view), so a FlatParams is needed to reduce them."""
    wide = (torch.arange(12, dtype=torch.float64) * (rank + 1) + 7 * rank).reshape(3, 4)
    return [wide, torch.arange(5, dtype=torch.float32) - 3 * rank,
            (torch.arange(6, dtype=torch.float32) * rank).reshape(2, 3).t()]


def math(rank: int, world: int, out: Path) -> None:
    specs = {"world": None}
    for size in (4, 2, 1):  # collective: every rank creates the groups, in the same order
        specs[f"groups of {size}"] = consecutive_group(rank, world, size)
    try:
        consecutive_group(rank, world, 3)
        refused = None
    except ValueError as exc:
        refused = str(exc)
    results = {"refused": refused, "cases": {}}
    for name, group in specs.items():
        for op in ("average", "total"):
            for form in ("list", "flat", "one buffer"):
                tensors = inputs(rank)[:1] if form == "one buffer" else inputs(rank)
                before = [t.clone() for t in tensors]
                stats = CommStats()
                helper = average if op == "average" else total
                helper(FlatParams(tensors) if form == "flat" else tensors, group=group, stats=stats, what=name)
                results["cases"][(name, op, form)] = {
                    "ranks": group_ranks(group), "before": before, "after": [t.clone() for t in tensors],
                    "stats": stats.as_dict()}
    torch.save(results, out / f"rank{rank}.pt")


def wait_for(path: Path, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def kill(rank: int, world: int, out: Path) -> None:
    group = consecutive_group(rank, world, 2)
    x = torch.full((1000,), float(rank), dtype=torch.float64)
    average([x], group=group, what="test average")
    (out / f"ready{rank}.tmp").write_text(str(float(x[0])))
    os.replace(out / f"ready{rank}.tmp", out / f"ready{rank}")
    if rank == 2:
        try:
            average([x], group=group, what="test average")  # rank 3 never joins: it is killed
        except PeerError as exc:
            (out / "error2.txt").write_text(str(exc))
            os._exit(3)
        os._exit(0)
    wait_for(out / "stop")  # rank 3 is killed while it waits
    os._exit(0)


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 120.0
    ctx = init_distributed(detect_launch(), device=torch.device("cpu"), backend="gloo", timeout_s=timeout)
    try:
        {"math": math, "kill": kill}[mode](ctx.rank, ctx.world_size, out)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
