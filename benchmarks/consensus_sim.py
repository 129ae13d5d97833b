"""Time the consensus simulator (``topology.simulate``) and the spectral gap at large ``N``.

For each schedule and replica count ``N``, runs ``--rounds`` rounds on ``(N, --dim)`` random
replicas and reports seconds per round, the whole simulation's seconds, the empirical contraction
rate of the consensus error, and the time to compute the schedule's spectral gap. Pure NumPy, one
process: the goal is that N = 4096 and beyond takes seconds, not minutes.

Usage: ``python3 benchmarks/consensus_sim.py [--sizes 1024 4096 16384] [--rounds 30] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from topology import make_schedule, mean_square_rate, random_initial_values, simulate  # noqa: E402

#: name -> make_schedule arguments (hierarchical: nodes of 8 ranks, as in 8-GPU nodes)
CASES: Dict[str, Dict[str, Any]] = {
    "crossover-fine": {"name": "crossover", "segments": 16},
    "crossover-no-fairness": {"name": "crossover", "segments": 16, "fair": False},
    "hierarchical-8": {"name": "hierarchical", "segments": 16, "local_size": 8},
    "exponential-k1": {"name": "exponential", "k": 1},
    "sgp-npeer-k2": {"name": "sgp-npeer", "k": 2},  # --sgp-peers 2: offsets j*3^i
    "ring": {"name": "ring"},
}
#: the simulator's goal: a round of N = 4096 replicas well under a second on one core
GOAL_N, GOAL_SECONDS_PER_ROUND = 4096, 1.0


def measure(case: str, n: int, rounds: int, dim: int) -> Dict[str, Any]:
    spec = dict(CASES[case])
    schedule = make_schedule(spec.pop("name"), n, seed=0, **spec)
    x0 = random_initial_values(n, dim * getattr(schedule, "num_segments", 1), seed=1)
    start = time.perf_counter()
    result = simulate(schedule, x0, rounds)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    gap = mean_square_rate(schedule).gap
    gap_seconds = time.perf_counter() - start
    return {"case": case, "n": n, "rounds": rounds, "dim": int(x0.shape[1]), "seconds": seconds,
            "seconds_per_round": seconds / max(rounds, 1), "empirical_rate": result.empirical_rate(),
            "final_error": float(result.errors[-1]), "spectral_gap": float(gap), "gap_seconds": gap_seconds}


def write_json(path: Path, data: Dict[str, Any]) -> None:
    """Write ``data`` atomically (a temporary file in the same folder, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384], help="replica counts N")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--dim", type=int, default=4, help="values per replica and segment")
    parser.add_argument("--quick", action="store_true", help="N = 64 and 256, 5 rounds (a smoke run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds = [64, 256], 5
    bad = [n for n in args.sizes if n < 2] + ([args.rounds] if args.rounds < 1 else []) + \
          ([args.dim] if args.dim < 1 else [])
    if bad:
        parser.error(f"--sizes must be >= 2 and --rounds, --dim >= 1 (got {bad[0]})")
    rows = [measure(case, n, args.rounds, args.dim) for n in args.sizes for case in args.cases]
    print(f"{'case':24} {'N':>6} {'s/round':>9} {'total s':>8} {'rate':>8} {'gap':>8} {'gap s':>7}")
    for r in rows:
        print(f"{r['case']:24} {r['n']:6d} {r['seconds_per_round']:9.4f} {r['seconds']:8.3f} "
              f"{r['empirical_rate']:8.4f} {r['spectral_gap']:8.3g} {r['gap_seconds']:7.3f}")
    at_goal = [r for r in rows if r["n"] >= GOAL_N]
    goals = [{"goal": f"simulation at N >= {GOAL_N}: under {GOAL_SECONDS_PER_ROUND} s per round", "case": r["case"],
              "n": r["n"], "value": r["seconds_per_round"], "met": r["seconds_per_round"] < GOAL_SECONDS_PER_ROUND}
             for r in at_goal]
    for g in goals:
        print(f"goal {'met' if g['met'] else 'MISSED'}: {g['case']} N={g['n']}: {g['value']:.4f} s per round")
    if args.json:
        write_json(args.json, {"benchmark": "consensus_sim",
                               "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                           "numpy": np.__version__, "device": "cpu"},
                               "settings": {"sizes": args.sizes, "rounds": args.rounds, "dim": args.dim,
                                            "cases": args.cases},
                               "rows": rows, "goals": goals})
    return 0


if __name__ == "__main__":
    sys.exit(main())
