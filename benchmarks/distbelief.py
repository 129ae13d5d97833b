"""DistBelief on the sharded server: a shard's update throughput, and Sandblaster's batch time with a
straggler.

Every case is a real training run of the command line (``python -m crossover_sgd train ...``)
started as a subprocess into a temporary directory (``--keep DIR``: into DIR), on the same data and
model:

* **shard throughput**: Downpour with ``--replicas R`` replicas pushing every step; shard 0's
  updates per second (updates applied / the shard's wall time, ``ps/shard0.json``) against a plain
  in-memory update of the same bytes in this process (``x -= lr * g`` on a tensor of the shard's
  size; and Adagrad's three operations), timed in one run side by side. The ratio is how far the
  shard, receiving every push over its links, stays from the memory bound.
* **straggler**: Sandblaster with ``--replicas R`` replicas, without a straggler, with one replica
  slowed ``--slow-factor`` times (it sleeps that multiple of each portion's time), and with the
  ``R - 1`` fast replicas alone; the time per evaluation of the batch (the coordinator's wall time
  / its function evaluations). Dynamic portions and backups should keep the straggler's batch time
  close to the fast replicas' alone (ratio near 1; without them it would approach the slow one's).

Output: one JSON object per line on stdout, a table on stderr, ``--json PATH`` the whole result in
the benchmarks' common shape. Defaults take about 2 minutes on a 2-core machine.

Usage: ``python3 benchmarks/distbelief.py [--replicas 3] [--epochs 2] [--json distbelief.json]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

GOAL = 1.25  # a straggler's batch time against the fast replicas alone


def train(out: Path, nproc: int, args: argparse.Namespace, extra: Sequence[str]) -> float:
    command = [sys.executable, "-m", "crossover_sgd", "train", "--nproc", str(nproc), "--out", str(out),
               "--epochs", str(args.epochs), "--model", args.model, "--workers", "0", "--log-level", "WARNING",
               "--timeout", "120", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        raise SystemExit(f"distbelief: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def in_memory_rate(numel: int, adagrad: bool, seconds: float = 1.0) -> float:
    """Updates per second of ``x -= lr * g`` (or Adagrad's) on ``numel`` float32 elements."""
    x, g, a = torch.zeros(numel), torch.randn(numel), torch.zeros(numel)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        if adagrad:
            a.addcmul_(g, g, value=1)
            x.addcdiv_(g, a.sqrt().add_(1e-10), value=-0.1)
        else:
            x.sub_(g, alpha=0.1)
        count += 1
    return count / (time.perf_counter() - started)


def measure(args: argparse.Namespace, root: Path) -> Dict[str, Any]:
    rows: List[Dict[str, Any]] = []
    for optimizer in ("sgd", "adagrad"):
        out = root / f"downpour-{optimizer}"
        train(out, args.replicas + 1, args, ["--algorithm", "downpour", "--ps-optimizer", optimizer,
                                             "--ps-eval-every", "1000000"])
        shard = json.loads((out / "ps" / "shard0.json").read_text())
        served = shard["updates"] / shard["wall_time_s"]
        memory = in_memory_rate(shard["elements"], optimizer == "adagrad")
        rows.append({"kind": "throughput", "optimizer": optimizer, "replicas": args.replicas,
                     "updates": shard["updates"], "elements": shard["elements"],
                     "shard_updates_per_s": round(served, 2), "memory_updates_per_s": round(memory, 2),
                     "memory_over_shard": round(memory / served, 2)})
        print(json.dumps(rows[-1]), flush=True)
    sandblaster = ["--algorithm", "sandblaster", "--portion-size", str(args.portion_size), "--lbfgs-max-iter", "5"]
    times: Dict[str, float] = {}
    for case, nproc, extra in (("no straggler", args.replicas + 2, []),
                               ("one straggler", args.replicas + 2, ["--slow-replicas", "0", "--slow-factor",
                                                                     str(args.slow_factor)]),
                               ("fast replicas alone", args.replicas + 1, [])):
        out = root / f"sandblaster-{case.replace(' ', '-')}"
        train(out, nproc, args, sandblaster + extra)
        coordinator = json.loads((out / "ps" / "coordinator.json").read_text())
        times[case] = coordinator["wall_time_s"] / max(coordinator["func_evals"], 1)
        rows.append({"kind": "straggler", "case": case, "replicas": nproc - 2, "evaluations": coordinator["func_evals"],
                     "batch_s": round(times[case], 4), "backups": coordinator["backups"],
                     "portions_by_replica": coordinator["portions_by_replica"]})
        print(json.dumps(rows[-1]), flush=True)
    ratio = times["one straggler"] / times["fast replicas alone"]
    goal = {"kind": "goal", "goal": f"batch time with a straggler / fast replicas alone <= {GOAL}",
            "value": round(ratio, 3), "met": ratio <= GOAL}
    print(json.dumps(goal), flush=True)
    return {"benchmark": "distbelief", "machine": common.machine_info(), "settings": {
        "replicas": args.replicas, "epochs": args.epochs, "model": args.model, "slow_factor": args.slow_factor,
        "portion_size": args.portion_size, "nprocs": [args.replicas + 1, args.replicas + 2]},
        "rows": rows, "goals": [goal]}


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3, help="Downpour's and Sandblaster's replicas")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--portion-size", type=int, default=120)
    parser.add_argument("--slow-factor", type=float, default=4.0, help="the straggler sleeps this multiple")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one training run may take")
    parser.add_argument("--keep", type=Path, default=None, help="write the runs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the whole result to this JSON file")
    args = parser.parse_args(argv)
    if args.replicas < 2 or args.epochs < 1 or args.portion_size < 1 or args.slow_factor < 0:
        parser.error("--replicas must be >= 2, --epochs and --portion-size >= 1, --slow-factor >= 0")
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = measure(args, args.keep)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = measure(args, Path(tmp))
    for row in result["rows"]:
        print("  ".join(f"{k}={v}" for k, v in row.items() if k != "kind"), file=sys.stderr)
    print(result["goals"][0]["goal"], result["goals"][0]["value"], "met" if result["goals"][0]["met"] else "NOT met",
          file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
