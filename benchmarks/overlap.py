"""Step time with the gossip exchange overlapped with computation, sequential, and alone.

In ``N`` ranks, three windows are timed in alternation for each algorithm setting:

* ``compute``: the package's Trainer step (``Trainer.train_step``) with the no-communication base
  algorithm: forward, backward, optimizer step;
* ``communication``: the algorithm's communication alone (``before_step``, ``after_step``,
  ``flush``) on a model of the same size, no computation;
* ``step``: the Trainer step with the algorithm, as training runs it (the window ends with
  ``flush()``, so a message still in flight at its end is waited for inside the window).

Settings: ``sgp-1peer`` and ``crossover-fine`` (sequential), ``sgp-overlap`` (OSGP) and
``crossover-overlap`` (``--gossip-overlap True``): the round's messages travel during the next
step's forward/backward and are mixed one step late. Goal: an overlapped step at most 1.1x
``max(compute, communication)``; a sequential one costs about their sum.

A ``step`` window ends with the last round's ``flush()``, which an overlapped mode pays in full
(nothing left to hide it behind): a window of ``s`` steps costs about ``s max(c, m) + min(c, m)``,
so ``step/max`` cannot reach 1.1 with fewer than about 10 steps per window when computation and
communication are alike. With ``--steps 3`` or more the ``steady`` column is the time per step
between the end of the first step and the end of the last (the flush and the first step's
startup left out; the slowest rank's), what a long run pays per step; its goal is the same 1.1x.
On an emulated cluster (``--emulate-nodes M --link-rate RATE``) the exchange is link-bound: the
links move the bytes while the CPU computes, the regime loopback cannot show.

Usage: ``python3 benchmarks/overlap.py [--nprocs 2] [--model resnet18] [--json out.json]``;
``python3 benchmarks/overlap.py --nprocs 2 --emulate-nodes 2 --link-rate 500mbit --batch-size 16 --steps 4``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

log = logging.getLogger("benchmarks.overlap")

OVERLAP_CASES = ("sgp-1peer", "sgp-overlap", "crossover-fine", "crossover-overlap")
OVERLAPPED = {"sgp-overlap", "crossover-overlap"}  # settings that overlap their exchange with computation


def measure_case(ctx, label: str, spec: common.StepSpec, compute, batch, args: argparse.Namespace,
                 tmp: Path) -> Dict[str, Any]:
    """Alternate compute / communication / step windows for one setting (collective)."""
    device, case = ctx.device, common.CASES[label]
    trainer = common.build_trainer(ctx, case, spec, tmp / label)
    comm_model = common.build_bench_model(spec.model, device, spec.image_size)
    if spec.channels_last:
        comm_model = comm_model.to(memory_format=torch.channels_last)
    common.give_gradients(comm_model)
    comm_optimizer = torch.optim.SGD(comm_model.parameters(), lr=0.0)
    alone = common.make_algorithm(ctx, case)
    alone.prepare(comm_model)
    stamps: List[List[float]] = []  # per step window: the time at the end of each of its steps

    def stamped_step() -> None:
        trainer.train_step([batch])
        stamps[-1].append(time.perf_counter())

    step_window = common.steps_window(stamped_step, args.steps, after=trainer.algorithm.flush)
    windows = {
        "compute": common.steps_window(lambda: compute.train_step([batch]), args.steps),
        "communication": common.steps_window(common.communication_round(alone, comm_optimizer), args.steps),
        "step": lambda: (stamps.append([]), step_window()),
    }
    if ctx.rank == 0:
        log.info("%d ranks, %s: compute / communication / step windows of %d steps (%d warmup + %d repeats)",
                 ctx.world_size, label, args.steps, args.warmup, args.repeats)
    samples = common.interleave(windows, device, args.warmup, args.repeats)
    per_step = {name: common.summarize([s / args.steps for s in values]) for name, values in samples.items()}
    compute_s, comm_s, step_s = (per_step[k]["median_s"] for k in ("compute", "communication", "step"))
    steady: Dict[str, Any] = {}
    if args.steps >= 3:  # end of the first step to end of the last, per step, of the timed windows
        local = [(w[-1] - w[0]) / (len(w) - 1) for w in stamps[-args.repeats:]]
        samples_steady = common.max_over_ranks(local, device)
        steady_s = common.summarize(samples_steady)["median_s"]
        steady = {"steady_step_s": steady_s, "steady_ratio_to_max": steady_s / max(compute_s, comm_s),
                  "steady_ratio_to_sum": steady_s / (compute_s + comm_s), "steady_samples": samples_steady}
    return {"case": label, "nproc": ctx.world_size, "mode": "overlapped" if label in OVERLAPPED else "sequential",
            "compute_s": compute_s, "communication_s": comm_s, "step_s": step_s, **steady,
            "ratio_to_max": step_s / max(compute_s, comm_s), "ratio_to_sum": step_s / (compute_s + comm_s),
            "overhead_over_compute": step_s / compute_s - 1.0,
            "samples_per_step": {k: [s / args.steps for s in v] for k, v in samples.items()}}


def run_rank(args: argparse.Namespace) -> None:
    ctx = common.join_process_group(args.device)
    try:
        spec = common.resolve_step_options(args)
        batch = common.synthetic_batch(spec, ctx.device, seed=ctx.rank)
        with tempfile.TemporaryDirectory(prefix="overlap-") as tmp:
            compute = common.build_trainer(ctx, common.CASES["none"], spec, Path(tmp) / "none")
            rows = []
            for label in args.cases:
                reason = common.CASES[label].skip_reason(ctx.world_size)
                if reason is not None:
                    rows.append({"case": label, "nproc": ctx.world_size, "skipped": reason})
                    continue
                rows.append(measure_case(ctx, label, spec, compute, batch, args, Path(tmp)))
                gc.collect()  # the case's Trainer and buffers are gone before the next is built
        payload = {"nproc": ctx.world_size, "step": spec.__dict__, "rows": rows}
        common.finish_rank(ctx, args, payload, report)
    finally:
        common.leave_process_group()


def goals(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for r in rows:
        if r.get("mode") != "overlapped":
            continue
        out.append({"case": r["case"], "nproc": r["nproc"], "goal": "overlapped step <= 1.1 x max(compute, communication)",
                    "value": r["ratio_to_max"], "met": r["ratio_to_max"] <= 1.1})
        if "steady_ratio_to_max" in r:
            out.append({"case": r["case"], "nproc": r["nproc"],
                        "goal": "steady overlapped step (flush left out) <= 1.1 x max(compute, communication)",
                        "value": r["steady_ratio_to_max"], "met": r["steady_ratio_to_max"] <= 1.1})
    return out


def report(parts: List[Dict[str, Any]], args: argparse.Namespace) -> Dict[str, Any]:
    rows = [row for part in parts for row in part["rows"]]
    step = parts[0]["step"] if parts else {}
    result = {"benchmark": "overlap", "machine": common.machine_info(args.device),
              "settings": {"nprocs": [p["nproc"] for p in parts], "cases": args.cases, "steps_per_window": args.steps,
                           "threads_per_rank": args.threads, "warmup": args.warmup, "repeats": args.repeats, **step},
              "rows": rows, "goals": goals(rows)}
    shown = [{**r, **{k: r[k] * 1e3 for k in ("compute_s", "communication_s", "step_s", "steady_step_s") if k in r}}
             for r in rows]
    columns = [common.Column("nproc", "n"), common.Column("case", "case"), common.Column("mode", "mode"),
               common.Column("compute_s", "compute ms", "{:.1f}"),
               common.Column("communication_s", "comm ms", "{:.1f}"), common.Column("step_s", "step ms", "{:.1f}"),
               common.Column("ratio_to_max", "step/max", "{:.2f}"), common.Column("ratio_to_sum", "step/sum", "{:.2f}"),
               common.Column("steady_step_s", "steady ms", "{:.1f}"),
               common.Column("steady_ratio_to_max", "steady/max", "{:.2f}"),
               common.Column("steady_ratio_to_sum", "steady/sum", "{:.2f}"),
               common.Column("skipped", "note")]
    m = result["machine"]
    common.report(f"Step time per optimizer step, {step.get('model')} batch {step.get('batch_size')}/rank; "
                  f"{m['cpu_count']} CPUs, torch {m['torch']}, device {args.device}, median of {args.repeats} "
                  f"windows of {args.steps} steps",
                  columns, shown,
                  [common.Column("nproc", "n"), common.Column("case", "case"), common.Column("goal", "goal"),
                   common.Column("value", "measured", "{:.2f}"), common.Column("met", "met")],
                  result, args.json)
    return result


def main(argv: List[str] | None = None) -> Dict[str, Any] | None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--nprocs", type=int, nargs="+", default=[2], help="world sizes to measure")
    parser.add_argument("--cases", nargs="+", default=list(OVERLAP_CASES), choices=OVERLAP_CASES)
    common.add_step_flags(parser, batch_size=8)
    parser.set_defaults(warmup=1, repeats=3)
    args = parser.parse_args(argv)
    common.check_counts(parser, args)
    common.default_model(args)
    if args.quick:
        args.nprocs, args.model, args.batch_size, args.steps, args.warmup, args.repeats = [2], "small_cnn", 8, 2, 1, 2
    if any(n < 2 for n in args.nprocs) or args.steps < 1:
        parser.error("--nprocs must be >= 2 and --steps >= 1")
    return common.run_or_launch(Path(__file__).resolve(), args, run_rank,
                                [*common.step_argv(args), "--cases", *args.cases], report, threads=args.threads)


if __name__ == "__main__":
    main()
