"""Images per second of the full training step, per algorithm, against a plain PyTorch loop.

Two parts, each measured in alternating windows of ``--steps`` steps on fixed synthetic batches:

1. **Loop overhead, one process**: the package's ``Trainer.train_step`` (with the
   no-communication base algorithm, ``none``, and with the default ``allreduce``, which wraps the
   model in DistributedDataParallel even on one rank) against a hand-written loop (``zero_grad``,
   forward, loss, backward, ``step``) with the same model, initial weights, optimizer and batch.
   Goal: the Trainer's step at most 3 % slower than the hand-written one.
2. **Algorithms, N ranks**: each algorithm's Trainer step against the plain loop running in the
   same N processes with no communication (the ideal throughput of N ranks). Reported: images/s
   over all ranks, and the ratio to the plain loop (scaling efficiency).

Defaults fit a small CPU machine (ResNet-18 at 32 pixels, batch 8 per rank, Gloo). On GPUs:
``--device cuda`` trains ResNet-50 at 224 pixels in channels_last with bf16 autocast (where
supported) unless the flags say otherwise; run it under ``srun``/``torchrun`` (one rank per GPU)
or let it start ``--nprocs`` local ranks.

Usage: ``python3 benchmarks/throughput.py [--nprocs 2] [--model resnet18] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

log = logging.getLogger("benchmarks.throughput")

SINGLE_CASES = ("none", "allreduce")
MULTI_CASES = ("none", "allreduce", "allreduce-param", "sgp-1peer", "sgp-overlap", "crossover-fine", "hierarchical-2")


def images_per_s(spec: common.StepSpec, world: int, steps: int, seconds: float) -> float:
    return world * spec.batch_size * steps / seconds


def trainer_window(ctx, label: str, spec: common.StepSpec, batch, steps: int, tmp: Path):
    """A window of ``steps`` Trainer steps with ``label``'s algorithm (its ``flush`` included)."""
    trainer = common.build_trainer(ctx, common.CASES[label], spec, tmp / label)
    return common.steps_window(lambda: trainer.train_step([batch]), steps, after=trainer.algorithm.flush)


def loop_overhead(ctx, spec: common.StepSpec, plain_window, batch, args: argparse.Namespace,
                  tmp: Path) -> List[Dict[str, Any]]:
    """One process: the hand-written loop and every Trainer variant, side by side."""
    windows = {"plain": plain_window}
    windows.update({label: trainer_window(ctx, label, spec, batch, args.steps, tmp) for label in SINGLE_CASES})
    log.info("1 rank: plain loop vs Trainer (%s), windows of %d steps (%d warmup + %d repeats)",
             ", ".join(SINGLE_CASES), args.steps, args.warmup, args.repeats)
    samples = common.interleave(windows, ctx.device, args.warmup, args.repeats)
    return _rows(samples, list(SINGLE_CASES), spec, 1, args.steps)


def per_algorithm(ctx, spec: common.StepSpec, plain_window, batch, args: argparse.Namespace,
                  tmp: Path) -> List[Dict[str, Any]]:
    """N processes: each algorithm's Trainer step against the loop without communication."""
    rows: List[Dict[str, Any]] = []
    for label in args.cases:
        reason = common.CASES[label].skip_reason(ctx.world_size)
        if reason is not None:
            rows.append({"nproc": ctx.world_size, "case": label, "skipped": reason})
            continue
        if ctx.rank == 0:
            log.info("%d ranks: plain loop vs %s, windows of %d steps (%d warmup + %d repeats)",
                     ctx.world_size, label, args.steps, args.warmup, args.repeats)
        windows = {"plain": plain_window, label: trainer_window(ctx, label, spec, batch, args.steps, tmp)}
        rows += _rows(common.interleave(windows, ctx.device, args.warmup, args.repeats), [label], spec,
                      ctx.world_size, args.steps)
        del windows
        gc.collect()  # this algorithm's Trainer is gone before the next one is built
    return rows


def run_rank(args: argparse.Namespace) -> None:
    ctx = common.join_process_group(args.device)
    try:
        spec = common.resolve_step_options(args)
        batch = common.synthetic_batch(spec, ctx.device, seed=ctx.rank)
        plain = common.PlainLoop(spec, ctx.device)
        plain_window = common.steps_window(lambda: plain.step(*batch), args.steps)
        measure = loop_overhead if ctx.world_size == 1 else per_algorithm
        with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
            rows = measure(ctx, spec, plain_window, batch, args, Path(tmp))
        payload = {"nproc": ctx.world_size, "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
                   "step": spec.__dict__, "rows": rows}
        common.finish_rank(ctx, args, payload, report)
    finally:
        common.leave_process_group()


def min_and_median(samples: List[float]) -> tuple:
    stats = common.summarize(samples)
    return stats["median_s"], stats["min_s"]


def _rows(samples: Dict[str, List[float]], labels: List[str], spec: common.StepSpec, world: int,
          steps: int) -> List[Dict[str, Any]]:
    plain, plain_min = min_and_median(samples["plain"])
    rows = []
    for label in labels:
        mine, mine_min = min_and_median(samples[label])
        rows.append({"nproc": world, "case": label, "step_s": mine / steps, "plain_step_s": plain / steps,
                     "images_per_s": images_per_s(spec, world, steps, mine),
                     "plain_images_per_s": images_per_s(spec, world, steps, plain),
                     "ratio_to_plain": plain / mine, "step_time_overhead": mine / plain - 1.0,
                     "step_time_overhead_min": mine_min / plain_min - 1.0,
                     "samples": samples[label], "plain_samples": samples["plain"]})
    return rows


def goals(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{"nproc": 1, "case": r["case"], "goal": "Trainer step time <= 1.03 x hand-written loop (1 process)",
             "value": 1.0 + r["step_time_overhead"], "value_min": 1.0 + r["step_time_overhead_min"],
             "met": r["step_time_overhead"] <= 0.03}
            for r in rows if r["nproc"] == 1 and "step_s" in r]


def report(parts: List[Dict[str, Any]], args: argparse.Namespace) -> Dict[str, Any]:
    rows = [row for part in parts for row in part["rows"]]
    step = parts[0]["step"] if parts else {}
    result = {"benchmark": "throughput", "machine": common.machine_info(args.device),
              "settings": {"nprocs": [p["nproc"] for p in parts],
                           "threads_per_rank": {p["nproc"]: p["threads"] for p in parts},
                           "cases": args.cases, "steps_per_window": args.steps, "warmup": args.warmup,
                           "repeats": args.repeats, **step},
              "rows": rows, "goals": goals(rows)}
    shown = [{**r, **{k: r[k] * 1e3 for k in ("step_s", "plain_step_s") if k in r},
              "overhead_pct": 100 * r["step_time_overhead"] if "step_time_overhead" in r else None,
              "overhead_min_pct": 100 * r["step_time_overhead_min"] if "step_time_overhead_min" in r else None}
             for r in rows]
    columns = [common.Column("nproc", "n"), common.Column("case", "algorithm"),
               common.Column("images_per_s", "img/s", "{:.1f}"),
               common.Column("plain_images_per_s", "plain img/s", "{:.1f}"),
               common.Column("ratio_to_plain", "x plain", "{:.3f}"),
               common.Column("overhead_pct", "step +%", "{:+.1f}"),
               common.Column("overhead_min_pct", "(min) +%", "{:+.1f}"),
               common.Column("step_s", "step ms", "{:.1f}"), common.Column("skipped", "note")]
    m = result["machine"]
    common.report(f"Training-step throughput, {step.get('model')} batch {step.get('batch_size')}/rank, channels_last "
                  f"{step.get('channels_last')}, bf16 {step.get('amp')}; {m['cpu_count']} CPUs, torch {m['torch']}, "
                  f"device {args.device}; median of {args.repeats} windows of {args.steps} steps",
                  columns, shown,
                  [common.Column("case", "Trainer with"), common.Column("goal", "goal"),
                   common.Column("value", "median", "{:.3f}"), common.Column("value_min", "min", "{:.3f}"),
                   common.Column("met", "met")],
                  result, args.json)
    return result


def main(argv: List[str] | None = None) -> Dict[str, Any] | None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2],
                        help="world sizes (1: the loop-overhead comparison)")
    parser.add_argument("--cases", nargs="+", default=list(MULTI_CASES), choices=MULTI_CASES,
                        help="algorithms for world sizes above 1")
    common.add_step_flags(parser, batch_size=8)
    parser.set_defaults(warmup=1, repeats=9, steps=1)
    args = parser.parse_args(argv)
    common.check_counts(parser, args)
    common.default_model(args)
    if args.quick:
        args.nprocs, args.model, args.batch_size = [1, 2], "small_cnn", 8
        args.steps, args.warmup, args.repeats = 2, 1, 2
        args.cases = ["none", "allreduce", "crossover-fine"]
    if any(n < 1 for n in args.nprocs) or args.steps < 1:
        parser.error("--nprocs and --steps must be >= 1")
    return common.run_or_launch(Path(__file__).resolve(), args, run_rank,
                                [*common.step_argv(args), "--cases", *args.cases], report,
                                threads=args.threads if args.device == "cpu" else 1)


if __name__ == "__main__":
    main()
