"""The parameter-server family side by side: rounds, time to accuracy, bytes, and overlap on a slow link.

Every case is a real training run of the command line (``python -m crossover_sgd train --nproc N
...``, the same as ``crossover-sgd train``) started as a subprocess into a temporary directory
(``--keep DIR``: into DIR, to draw them with ``crossover-sgd plot DIR/*``), one after the other,
all on the same data, model, seed, batch size and learning rate: ``--workers W`` trainers, plus
``--ps-shards S`` server ranks for the parameter-server family (``--algorithm localsgd | osp |
losp | dqlosp``, ``--nproc W+S``), or ``--nproc W`` for ``allreduce``. From their records:

* **per run** (no delay): the time per aggregation round (median of the gaps between shard 0's
  rows, ``ps/shard0.csv`` ``elapsed_s``, and the mean, ``ps/shard0.json`` wall time / rounds;
  all-reduce: every step is a round, its wall time / steps), the time to ``--target-acc`` (the
  first ``elapsed_s`` at which shard 0's ``test_acc`` reaches it, shard 0 evaluating every
  ``--ps-eval-every`` rounds; all-reduce: the first epoch end whose ``val_acc`` reaches it, from
  ``metrics_rank0.csv``: a resolution of one epoch), the global iterations then, the best and
  final accuracy, and the bytes each worker sent and received (its ``metrics_rank{r}.csv``);
* **overlap on a slow link** (``--ps-delay D``: every server reply leaves D seconds late; shard 0
  evaluates only at the end): for OSP and LOSP, the step time against ``max(compute,
  communication)``. From ``ps/worker_rank{r}.csv``, the interval between two consecutive pushes
  ``i`` and ``i+1`` of a worker is ``train_s[i+1] + wait_s[i]`` (the steps computed for push i+1
  and the time blocked for the reply to push i) and holds ``k[i+1]`` steps; intervals touching a
  segment's end (a final push: evaluation, checkpoint) are left out. *Compute* per step is the
  median of ``train_s / k`` of the localsgd run without delay (each run's own figure is reported
  too, with the ratio against it: on a shared machine two runs' compute differs by tens of %);
  *communication* ``L`` is the median ``latency_s`` (push to reply) of localsgd with the same
  delay. Ideal interval: ``max(k * compute, L)``; reported, as medians over the intervals: the
  step ``interval / k``, the ideal ``max(k * compute, L) / k`` and the ratio ``interval / ideal``
  (and the ratio of their sums, ``ratio_to_max_mean``). Goal: at most 1.1 (localsgd, which waits
  for every reply, is shown for reference: it approaches ``(k * compute + L) / max(...)``).

Output: one JSON object per line on stdout (``"kind"``: ``settings``, then ``run`` per training
run as it ends, ``overlap`` and ``goal``), a table on stderr, and with ``--json PATH`` the whole
result in the benchmarks' common shape (``benchmark``, ``machine``, ``settings``, ``rows``,
``goals``). Defaults take about 2-3 minutes on a 2-core machine (the runs' start-up dominates);
``--quick`` (1 worker, 1 epoch, localsgd, osp and allreduce) about a minute; ``--from-runs DIR``
reads the runs of an earlier ``--keep DIR`` again without training; for bigger runs, e.g.
``--workers 8 --epochs 20 --model resnet18 --dataset cifar10 --data-dir DIR``.

Usage: ``python3 benchmarks/ps_round.py [--workers 2] [--epochs 4] [--ps-delay 0.05] [--json ps.json]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

log = logging.getLogger("benchmarks.ps_round")

PS_ALGORITHMS = ("localsgd", "osp", "losp", "dqlosp")
ALGORITHMS = PS_ALGORITHMS + ("allreduce",)
#: The methods whose step is compared with max(compute, communication); localsgd is the reference.
OVERLAPPED = ("osp", "losp")
OVERLAP_GOAL = 1.1
#: --ps-eval-every of the delayed runs: shard 0 evaluates only at the end (no evaluation in a round).
NO_EVALUATION = 1_000_000_000


# --------------------------------------------------------------------------------------- records
def read_csv(path: Path) -> List[Dict[str, float]]:
    """A CSV's rows with every cell a float (NaN where it is not a number)."""
    def number(value: Any) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan

    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: number(v) for k, v in row.items() if k is not None} for row in csv.DictReader(handle)]


def first_reaching(rows: Sequence[Dict[str, float]], acc: str, target: float) -> Optional[Dict[str, float]]:
    """The first row whose ``acc`` is at least ``target`` (None: never)."""
    return next((row for row in rows if math.isfinite(row.get(acc, math.nan)) and row[acc] >= target), None)


def worker_bytes(run_dir: Path, ranks: Sequence[int]) -> Tuple[float, float]:
    """(sent, received) bytes per worker, the mean over ``ranks`` of their last metrics row."""
    sent, recv = [], []
    for rank in ranks:
        rows = read_csv(run_dir / f"metrics_rank{rank}.csv")
        sent.append(rows[-1]["comm_bytes_sent"])
        recv.append(rows[-1]["comm_bytes_recv"])
    return statistics.mean(sent), statistics.mean(recv)


def best(values: Sequence[float]) -> Optional[float]:
    finite = [v for v in values if math.isfinite(v)]
    return max(finite) if finite else None


def finite_or_none(value: float, digits: int = 6) -> Optional[float]:
    return round(value, digits) if value is not None and math.isfinite(value) else None


def ps_run_row(run_dir: Path, algorithm: str, args: argparse.Namespace) -> Dict[str, Any]:
    """The numbers of a parameter-server run without delay (see the module docstring)."""
    rows = read_csv(run_dir / "ps" / "shard0.csv")
    summary = json.loads((run_dir / "ps" / "shard0.json").read_text())
    rounds = int(summary["rounds"])
    times = [0.0] + [row["elapsed_s"] for row in rows]
    gaps = [b - a for a, b in zip(times, times[1:])]
    reached = first_reaching(rows, "test_acc", args.target_acc)
    sent, recv = worker_bytes(run_dir, range(args.ps_shards, args.ps_shards + args.workers))
    return {"rounds": rounds, "global_iterations": int(summary["global_iterations"]),
            "steps_per_worker_per_round": round(summary["global_iterations"] / max(rounds, 1) / args.workers, 3),
            "round_s_median": finite_or_none(statistics.median(gaps)) if gaps else None,
            "round_s_mean": finite_or_none(summary["wall_time_s"] / max(rounds, 1)),
            "train_wall_s": summary["wall_time_s"],
            "time_to_target_s": reached["elapsed_s"] if reached else None,
            "iterations_to_target": int(reached["global_iterations"]) if reached else None,
            "best_acc": finite_or_none(best([row["test_acc"] for row in rows] + [summary["test_acc"]])),
            "final_acc": finite_or_none(summary["test_acc"]),
            "bytes_sent_per_worker": sent, "bytes_recv_per_worker": recv,
            "bytes_per_worker_per_round": round((sent + recv) / max(rounds, 1), 1)}


def allreduce_row(run_dir: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """The same numbers for all-reduce (every step a round; accuracy once per epoch)."""
    rows = read_csv(run_dir / "metrics_rank0.csv")
    summary = json.loads((run_dir / "summary.json").read_text())
    steps = int(summary["steps_done"])
    reached = first_reaching(rows, "val_acc", args.target_acc)
    sent, recv = worker_bytes(run_dir, range(args.workers))
    return {"rounds": steps, "global_iterations": steps * args.workers, "steps_per_worker_per_round": 1.0,
            "round_s_median": None, "round_s_mean": finite_or_none(summary["wall_time_s"] / max(steps, 1)),
            "train_wall_s": summary["wall_time_s"],
            "time_to_target_s": reached["wall_time_s"] if reached else None,
            "iterations_to_target": int(reached["step"]) * args.workers if reached else None,
            "best_acc": finite_or_none(best([row["val_acc"] for row in rows])),
            "final_acc": finite_or_none(rows[-1]["val_acc"]),
            "bytes_sent_per_worker": sent, "bytes_recv_per_worker": recv,
            "bytes_per_worker_per_round": round((sent + recv) / max(steps, 1), 1)}


def intervals(run_dir: Path) -> List[Tuple[int, float, float, float]]:
    """Per worker and pair of consecutive pushes (i, i+1) inside a segment: (k[i+1], train_s[i+1],
    wait_s[i], latency_s[i])."""
    found = []
    for path in sorted((run_dir / "ps").glob("worker_rank*.csv")):
        rows = read_csv(path)
        for before, after in zip(rows, rows[1:]):
            if before["final"] or after["final"] or not after["k"] > 0:
                continue
            found.append((int(after["k"]), after["train_s"], before["wait_s"], before["latency_s"]))
    return found


def intervals_of(run_dir: Path) -> List[Tuple[int, float, float, float]]:
    """:func:`intervals`, or a RuntimeError saying how to get some."""
    pairs = intervals(run_dir)
    if not pairs:
        raise RuntimeError(f"{run_dir}: no two consecutive pushes inside a segment: train longer "
                           "(--epochs, --delay-epochs) or with fewer --local-steps")
    return pairs


def compute_per_step(run_dir: Path) -> float:
    """Seconds of computation per local step: the median over the run's intervals of train_s / k."""
    return statistics.median(train / k for k, train, _, _ in intervals_of(run_dir))


def overlap_row(run_dir: Path, compute_s: float, comm_s: float) -> Dict[str, Any]:
    """The step time of a delayed run against max(k * compute, communication): medians over its
    intervals (a stall, e.g. an epoch's data loader starting, moves a median little), and the
    ratio of the sums over every interval as well (``ratio_to_max_mean``)."""
    pairs = intervals_of(run_dir)
    median = statistics.median
    own = median(train / k for k, train, _, _ in pairs)
    ideal = [max(k * compute_s, comm_s) for k, *_ in pairs]
    actual = [train + wait for _, train, wait, _ in pairs]
    return {"intervals": len(pairs), "mean_k": round(sum(p[0] for p in pairs) / len(pairs), 3),
            "step_s": median(a / p[0] for a, p in zip(actual, pairs)), "compute_step_s": compute_s,
            "own_compute_step_s": own, "comm_s": comm_s,
            "wait_step_s": median(wait / k for k, _, wait, _ in pairs),
            "ideal_step_s": median(i / p[0] for i, p in zip(ideal, pairs)),
            "ratio_to_max": median(a / i for a, i in zip(actual, ideal)),
            "ratio_to_max_own": median(a / max(p[0] * own, comm_s) for a, p in zip(actual, pairs)),
            "ratio_to_sum": median(a / (p[0] * compute_s + comm_s) for a, p in zip(actual, pairs)),
            "ratio_to_max_mean": sum(actual) / sum(ideal),
            "latency_s_median": median(p[3] for p in pairs)}


# --------------------------------------------------------------------------------------- runs
def train(args: argparse.Namespace, root: Path, algorithm: str, delay: float) -> Path:
    """One training run of the command line into ``root/<algorithm>[-delay<D>]``; its directory."""
    ps = algorithm in PS_ALGORITHMS
    name = algorithm if not delay else f"{algorithm}-delay{delay:g}"
    out = root / name
    if args.from_runs is not None:
        if not (out / "summary.json").is_file():
            raise RuntimeError(f"--from-runs {root}: no finished run {name} there (run with --keep {root} first)")
        return out
    nproc = args.workers + (args.ps_shards if ps else 0)
    command = [sys.executable, "-m", "crossover_sgd", "train", "--nproc", str(nproc), "--algorithm", algorithm,
               "--dataset", args.dataset, "--model", args.model, "--epochs", str(args.delay_epochs if delay else
                                                                                 args.epochs),
               "--seed", str(args.seed), "--out", str(out), "--log-level", "WARNING", "--timeout", str(args.timeout)]
    for flag, value in (("--batch-size", args.batch_size), ("--lr", args.lr), ("--data-dir", args.data_dir)):
        if value is not None:
            command += [flag, str(value)]
    if ps:
        command += ["--ps-shards", str(args.ps_shards), "--local-steps", str(args.local_steps),
                    "--ps-eval-every", str(NO_EVALUATION if delay else args.ps_eval_every)]
        if delay:
            command += ["--ps-delay", str(delay)]
    command += shlex.split(args.train_args)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    log.info("%s: %s", name, " ".join(command[2:]))
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed (exit code {result.returncode}):\n{result.stderr[-3000:]}")
    log.info("%s: done in %.1f s", name, time.perf_counter() - started)
    return out


def emit(row: Dict[str, Any]) -> None:
    """One JSON object on one line of stdout, at once (a reader may follow a long run)."""
    print(json.dumps(row), flush=True)


def measure(args: argparse.Namespace, root: Path) -> Dict[str, Any]:
    settings = {key: getattr(args, key) for key in (
        "workers", "ps_shards", "algorithms", "model", "dataset", "batch_size", "lr", "local_steps", "epochs",
        "delay_epochs", "ps_delay", "ps_eval_every", "target_acc", "seed", "threads", "train_args")}
    settings["nprocs"] = sorted({args.workers + (args.ps_shards if a in PS_ALGORITHMS else 0) for a in args.algorithms})
    settings["overlap_goal"] = OVERLAP_GOAL
    result: Dict[str, Any] = {"benchmark": "ps_round", "machine": common.machine_info("cpu"), "settings": settings,
                              "rows": [], "goals": []}
    emit({"kind": "settings", **{k: result[k] for k in ("benchmark", "machine", "settings")}})
    for algorithm in args.algorithms:
        started = time.perf_counter()
        run_dir = train(args, root, algorithm, 0.0)
        numbers = allreduce_row(run_dir, args) if algorithm == "allreduce" else ps_run_row(run_dir, algorithm, args)
        row = {"kind": "run", "algorithm": algorithm, "delay_s": 0.0, "workers": args.workers,
               "nproc": args.workers + (args.ps_shards if algorithm in PS_ALGORITHMS else 0),
               "target_acc": args.target_acc, **numbers, "process_s": round(time.perf_counter() - started, 2),
               "run_dir": str(run_dir) if args.keep else None}
        result["rows"].append(row)
        emit(row)
    overlapped = [a for a in OVERLAPPED if a in args.algorithms]
    if args.ps_delay > 0 and overlapped and "localsgd" in args.algorithms:
        compute_s = compute_per_step(root / "localsgd")
        reference = train(args, root, "localsgd", args.ps_delay)
        comm_s = statistics.median(p[3] for p in intervals_of(reference))
        for algorithm in ["localsgd"] + overlapped:
            run_dir = reference if algorithm == "localsgd" else train(args, root, algorithm, args.ps_delay)
            row = {"kind": "overlap", "algorithm": algorithm, "delay_s": args.ps_delay, "workers": args.workers,
                   **{k: (round(v, 6) if isinstance(v, float) else v)
                      for k, v in overlap_row(run_dir, compute_s, comm_s).items()},
                   "run_dir": str(run_dir) if args.keep else None}
            result["rows"].append(row)
            emit(row)
            if algorithm in OVERLAPPED:
                goal = {"kind": "goal", "algorithm": algorithm,
                        "goal": f"{algorithm} step / max(compute, communication) <= {OVERLAP_GOAL}",
                        "value": row["ratio_to_max"], "value_own_compute": row["ratio_to_max_own"],
                        "met": row["ratio_to_max"] <= OVERLAP_GOAL}
                result["goals"].append(goal)
                emit(goal)
    else:
        log.info("no overlap measurement: it needs --ps-delay > 0, localsgd and osp or losp among --algorithms")
    return result


def table(result: Dict[str, Any]) -> str:
    C = common.Column
    runs = [r for r in result["rows"] if r["kind"] == "run"]
    lines = [f"ps_round: {result['settings']['workers']} worker(s), {result['settings']['model']} on "
             f"{result['settings']['dataset']}, target accuracy {result['settings']['target_acc']}",
             common.format_table([C("algorithm", "algorithm"), C("rounds", "rounds"),
                                  C("steps_per_worker_per_round", "k/round", "{:.2f}"),
                                  C("round_s_median", "round ms (median)", "{:.1f}"),
                                  C("round_ms_mean", "round ms (mean)", "{:.1f}"),
                                  C("time_to_target_s", "s to target", "{:.2f}"),
                                  C("iterations_to_target", "iters to target"),
                                  C("best_acc", "best acc", "{:.3f}"), C("final_acc", "final acc", "{:.3f}"),
                                  C("mb_per_worker", "MB/worker", "{:.2f}")],
                                 [{**r, "round_s_median": None if r["round_s_median"] is None
                                   else 1e3 * r["round_s_median"],
                                   "round_ms_mean": None if r["round_s_mean"] is None else 1e3 * r["round_s_mean"],
                                   "mb_per_worker": (r["bytes_sent_per_worker"] + r["bytes_recv_per_worker"]) / 1e6}
                                  for r in runs])]
    overlaps = [r for r in result["rows"] if r["kind"] == "overlap"]
    if overlaps:
        ms = {k: 1e3 for k in ("step_s", "compute_step_s", "own_compute_step_s", "comm_s", "ideal_step_s")}
        lines += ["", f"with --ps-delay {result['settings']['ps_delay']} s (compute: localsgd without delay; "
                      "communication: localsgd's push latency with the delay)",
                  common.format_table([C("algorithm", "algorithm"), C("mean_k", "mean k", "{:.2f}"),
                                       C("step_s", "step ms", "{:.2f}"), C("compute_step_s", "compute ms", "{:.2f}"),
                                       C("own_compute_step_s", "own compute ms", "{:.2f}"),
                                       C("comm_s", "comm ms/push", "{:.1f}"),
                                       C("ideal_step_s", "max(k*c, L)/k ms", "{:.2f}"),
                                       C("ratio_to_max", "x max", "{:.3f}"), C("ratio_to_sum", "x sum", "{:.3f}")],
                                      [{**r, **{k: r[k] * f for k, f in ms.items()}} for r in overlaps])]
    for goal in result["goals"]:
        lines.append(f"goal {goal['goal']}: {goal['value']:.3f} ({'met' if goal['met'] else 'NOT met'})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- command line
def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS,
                        help="runs without delay, in this order (the overlap measurement needs localsgd and osp/losp)")
    parser.add_argument("--workers", type=int, default=2, help="trainer ranks (all-reduce: its --nproc)")
    parser.add_argument("--ps-shards", type=int, default=1, help="server ranks of the parameter-server runs")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None, help="for datasets read from disk")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per step per worker")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (None: the command line's default)")
    parser.add_argument("--local-steps", type=int, default=8, help="K: local steps per push (at most, overlapped)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the runs without delay")
    parser.add_argument("--delay-epochs", type=int, default=2, help="epochs of the runs with --ps-delay")
    parser.add_argument("--ps-delay", type=float, default=0.05,
                        help="seconds every server reply is held back in the overlap runs (0: no overlap runs)")
    parser.add_argument("--ps-eval-every", type=int, default=1, help="shard 0 evaluates every N rounds (no delay)")
    parser.add_argument("--target-acc", type=float, default=0.8, help="test accuracy (0..1) to time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every rank")
    parser.add_argument("--train-args", default="", help="more flags for every run, e.g. \"--momentum 0\"")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the runs here (a directory per run) instead of a temporary directory")
    parser.add_argument("--from-runs", type=Path, default=None,
                        help="measure nothing: read the runs an earlier --keep DIR wrote (same settings)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one training run may take")
    parser.add_argument("--quick", action="store_true",
                        help="1 worker, 1 epoch, localsgd, osp and allreduce: a smoke test of about a minute")
    parser.add_argument("--json", type=Path, default=None, help="also write the whole result to this JSON file")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.epochs, args.delay_epochs = 1, 1, 1
        args.algorithms = [a for a in args.algorithms if a in ("localsgd", "osp", "allreduce")]
    if args.workers < 1 or args.ps_shards < 1 or args.epochs < 1 or args.delay_epochs < 1 or args.local_steps < 1:
        parser.error("--workers, --ps-shards, --epochs, --delay-epochs and --local-steps must be >= 1")
    if args.ps_delay < 0 or not 0 < args.target_acc <= 1:
        parser.error("--ps-delay must be >= 0 and --target-acc in (0, 1]")
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse(argv)
    common.setup_logging(args.log_level)
    if args.from_runs is not None:
        result = measure(args, args.from_runs)
    elif args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = measure(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="ps_round-") as tmp:
            result = measure(args, Path(tmp))
    print(table(result), file=sys.stderr)
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
