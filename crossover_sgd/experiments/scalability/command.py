"""``crossover-sgd experiment scalability``: flags, presets (``--quick``, ``--study``), checks and the run."""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from crossover_sgd.atomic import atomic_write_json, atomic_write_text, user_output
from crossover_sgd.errors import ConfigError
from crossover_sgd.experiments import stats, tables
from crossover_sgd.experiments.runs import check_train_args, ensure_run
from crossover_sgd.experiments.scalability import claims as study
from crossover_sgd.experiments.scalability.plan import (VARIANT_NAMES, Cell, Design, RunSpec, Settings, Variant,
                                                        plan_runs, select_variants)
from crossover_sgd.experiments.scalability.report import markdown, plot
from crossover_sgd.experiments.scalability.results import SERIES_KEYS, aggregate, choose, chosen_rows, collect_run

__all__ = ["DEFAULTS", "PRESETS", "configure", "run"]

log = logging.getLogger(__name__)

#: The values of the flags a preset may set, without one.
DEFAULTS: Dict[str, Any] = {
    "world_sizes": [4, 8, 16], "seeds": [0, 1], "variants": list(VARIANT_NAMES), "gpu_per_node": [2], "epochs": 8,
    "batch_size": 16, "global_batch": None, "batch_sizes": [], "global_batches": [], "batch_world": None,
    "batch_variants": None, "lr_rule": "linear", "base_lr": 0.1, "base_batch": 128, "warmup_epochs": 1.0,
    "lr_schedule": "cosine", "dataset": "digits", "model": None, "train_args": "", "lr_grid": [1.0],
    "lr_grid_world": None,
}
#: ``--quick`` (tests) and ``--study`` (the study's design, sized to about two hours of a 2-core
#: machine: see docs/scalability.md); a flag given on the command line overrides its preset.
PRESETS: Dict[str, Dict[str, Any]] = {
    "quick": {"world_sizes": [2], "seeds": [0], "epochs": 2, "variants": ["allreduce", "crossover"],
              "warmup_epochs": 0.0},
    "study": {"world_sizes": [4, 8, 16, 32], "global_batch": 512, "batch_world": 8, "global_batches": [512, 768, 960],
              "batch_variants": ["allreduce", "sgp", "crossover"], "seeds": [0, 1, 2], "variants": list(VARIANT_NAMES),
              "gpu_per_node": [2, 4], "lr_rule": "sqrt", "base_lr": 0.2, "base_batch": 512, "lr_grid": [0.5, 1.0, 2.0],
              "lr_grid_world": 8, "epochs": 15, "warmup_epochs": 2.0, "lr_schedule": "cosine", "dataset": "mnist1d",
              "model": "cnn1d", "train_args": "--mnist1d-samples 10000"},
}
#: Flags of which one at most is given.
EXCLUSIVE = (("batch_size", "global_batch"), ("batch_sizes", "global_batches"))
#: A flag the user gives drops these values of the preset (``--batch-size``: no fixed global batch,
#: so no grid at one world size either).
DROPS = {"batch_size": ("global_batch", "lr_grid_world"), "global_batch": ("batch_size",),
         "batch_sizes": ("global_batches",), "global_batches": ("batch_sizes",)}


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = DEFAULTS
    parser.add_argument("--world-sizes", "--world_sizes", type=int, nargs="+",
                        help=f"numbers of processes (each a local rank, ~300 MB of memory; default {d['world_sizes']})")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (one run each; default 0 1)")
    parser.add_argument("--variants", nargs="+", choices=VARIANT_NAMES,
                        help="algorithm variants (hierarchical: one per --gpu-per-node value; default: all)")
    parser.add_argument("--gpu-per-node", "--gpu_per_node", type=int, nargs="+",
                        help="ranks per node of the hierarchical variant (default 2)")
    parser.add_argument("--epochs", type=int, help=f"epochs of every run (default {d['epochs']})")
    sweep = parser.add_argument_group("the processes sweep: a fixed per-rank batch, or a fixed global batch")
    sweep.add_argument("--batch-size", "--batch_size", type=int,
                       help=f"per-rank batch, the same at every world size (default {d['batch_size']})")
    sweep.add_argument("--global-batch", type=int,
                       help="global batch, the same at every world size: per-rank batch = GLOBAL / n (the study's "
                            "design; a multiple of every --world-sizes)")
    batches = parser.add_argument_group("the batch sweep at --batch-world processes")
    batches.add_argument("--batch-sizes", "--batch_sizes", type=int, nargs="+",
                         help="per-rank batches of the batch sweep")
    batches.add_argument("--global-batches", type=int, nargs="+",
                         help="global batches of the batch sweep (multiples of --batch-world)")
    batches.add_argument("--batch-world", "--batch_world", type=int,
                         help="processes of the batch sweep (default: the largest of --world-sizes)")
    batches.add_argument("--batch-variants", nargs="+", choices=VARIANT_NAMES,
                         help="variants of the batch sweep (some of --variants; default: all of them)")
    lr = parser.add_argument_group("learning rate")
    lr.add_argument("--lr-rule", choices=("linear", "sqrt", "constant"),
                    help="peak learning rate as a function of the global batch (default linear)")
    lr.add_argument("--base-lr", type=float, help="learning rate at --base-batch (default 0.1)")
    lr.add_argument("--base-batch", type=int, help="global batch of --base-lr (default 128)")
    lr.add_argument("--lr-grid", type=float, nargs="+",
                    help="multipliers of the rule's learning rate to try in every cell; each cell reports the one "
                         "with the best mean final accuracy over the seeds (default 1: no grid)")
    lr.add_argument("--lr-grid-world", type=_world_or_all, metavar="N|all",
                    help="run the grid only at N processes (one of --world-sizes or --batch-world); the other world "
                         "sizes reuse the multiplier chosen there for the same variant and global batch (needs "
                         "--global-batch); all: the grid at every world size (the default, but for --study)")
    lr.add_argument("--warmup-epochs", type=float, help="default 1")
    lr.add_argument("--lr-schedule", help="default cosine")
    parser.add_argument("--dataset", help="`train`'s --dataset (default digits)")
    parser.add_argument("--model", help="`train`'s --model (default: train's for the dataset: small_cnn, cnn1d for "
                                        "mnist1d)")
    parser.add_argument("--train-args", help="more flags for every `crossover-sgd train` (one string)")
    parser.add_argument("--verdict-by", choices=stats.RULES, default="t",
                        help="the interval that decides a comparison's verdict: the paired t interval (default) or "
                             "the percentile bootstrap")
    parser.add_argument("--run-timeout", type=float, default=1800.0, help="seconds one run may take")
    parser.add_argument("--out", default="runs/experiments/scalability",
                        help="output directory (re-running with the same one reuses finished runs)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    presets = parser.add_mutually_exclusive_group()
    presets.add_argument("--quick", action="store_true",
                         help="2 processes, 1 seed, 2 epochs, allreduce and crossover (for tests)")
    presets.add_argument("--study", action="store_true",
                         help="the study's design on MNIST-1D: 4 8 16 32 processes at a fixed global batch of 512, "
                              "global batches 512 768 960 at 8 processes (AllReduce, SGP, Crossover), every variant "
                              "(hierarchical with 2 and 4 ranks per node), 3 seeds, an lr grid at 8 processes; about "
                              "two hours on 2 cores (docs/scalability.md)")
    return parser


def _world_or_all(text: str) -> Union[int, str]:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes or 'all'") from None


def apply_preset(args: argparse.Namespace) -> Dict[str, str]:
    """Fill every flag the user left out: from the preset (``--quick``/``--study``), else the defaults.
    Returns the flags the preset set, with its name (for messages)."""
    name = "quick" if args.quick else "study" if args.study else None
    preset = PRESETS[name] if name else {}
    given = {k for k in DEFAULTS if getattr(args, k) is not None}
    for first, second in EXCLUSIVE:
        if {first, second} <= given:
            raise ConfigError(f"give --{first.replace('_', '-')} or --{second.replace('_', '-')}, not both")
    dropped = {key for flag in given for key in DROPS.get(flag, ())}
    for key, default in DEFAULTS.items():
        if key not in given:
            value = preset.get(key, default) if key not in dropped else [] if isinstance(default, list) else None
            setattr(args, key, list(value) if isinstance(value, list) else value)
    if args.global_batch is not None:
        args.batch_size = None
    return {key: f"--{name}" for key in preset if key not in given and key not in dropped}


def _check_positive(**values: Any) -> None:
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            if v is not None and v < 1:
                raise ConfigError(f"{flag} {v} is invalid: use integers >= 1")


def _check_values(args: argparse.Namespace) -> None:
    """Numbers, seeds and the lr grid."""
    if args.world_sizes[0] < 2:
        raise ConfigError("--world-sizes: every world size must be >= 2")
    _check_positive(epochs=args.epochs, batch_size=args.batch_size, global_batch=args.global_batch,
                    base_batch=args.base_batch, batch_sizes=args.batch_sizes, global_batches=args.global_batches,
                    gpu_per_node=args.gpu_per_node)
    if not args.base_lr > 0 or not args.run_timeout > 0:
        raise ConfigError("--base-lr and --run-timeout must be > 0")
    if len(set(args.seeds)) != len(args.seeds):
        raise ConfigError("--seeds: give each seed once")
    if not all(math.isfinite(m) and m > 0 for m in args.lr_grid) or len(set(args.lr_grid)) != len(args.lr_grid):
        raise ConfigError(f"--lr-grid {' '.join(f'{m:g}' for m in args.lr_grid)} is invalid: give multipliers > 0, "
                          "each once")


def _check_sweeps(args: argparse.Namespace, preset: Mapping[str, str]) -> None:
    """The global batches divide over the processes; the grid's world size and the batch sweep's
    variants are in the design (a message names the preset that set a value)."""
    def flag(key: str) -> str:
        name = "--" + key.replace("_", "-")
        return f"{name} {_text(getattr(args, key))}" + (f" (set by {preset[key]})" if key in preset else "")

    def divisible(key: str, value: int, divisors: Sequence[int], of: str) -> None:
        bad = [n for n in divisors if value % n]
        if bad:
            shown = f"{flag(key)}: {value}" if isinstance(getattr(args, key), list) else flag(key)
            raise ConfigError(f"{shown} is not divisible by {bad[0]} ({of}): use a multiple of {math.lcm(*divisors)}")

    if args.global_batch is not None:
        divisible("global_batch", args.global_batch, args.world_sizes, f"--world-sizes {_text(args.world_sizes)}")
    if (args.batch_sizes or args.global_batches) and args.batch_world is None:
        args.batch_world = max(args.world_sizes)
    if args.batch_world is not None and args.batch_world < 2:
        raise ConfigError(f"--batch-world {args.batch_world} is invalid: use an integer >= 2")
    for b in args.global_batches:
        divisible("global_batches", b, [args.batch_world], f"--batch-world {args.batch_world}")
    if args.lr_grid_world == "all":
        args.lr_grid_world = None
    if args.lr_grid_world is not None:
        if args.global_batch is None:
            raise ConfigError(f"{flag('lr_grid_world')} needs --global-batch (at a fixed per-rank batch no other "
                              "world size has the same global batch)")
        accepted = sorted({*args.world_sizes, *([args.batch_world] if args.batch_world else [])})
        if args.lr_grid_world not in accepted:
            raise ConfigError(f"{flag('lr_grid_world')} is not one of --world-sizes or --batch-world: use one of "
                              f"{_text(accepted)}, or all")
    if "batch_variants" in preset:  # the preset's, of the variants the user chose
        args.batch_variants = [v for v in args.batch_variants if v in args.variants]
    if args.batch_variants is not None and not set(args.batch_variants) <= set(args.variants):
        raise ConfigError(f"{flag('batch_variants')}: {_text(sorted(set(args.batch_variants) - set(args.variants)))} "
                          f"not in --variants ({_text(args.variants)})")


def _text(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def check(args: argparse.Namespace) -> Tuple[Design, Settings]:
    """Fill the flags from the preset and validate them: the design and the settings of the runs."""
    preset = apply_preset(args)
    args.world_sizes = sorted(set(args.world_sizes))
    _check_values(args)
    _check_sweeps(args, preset)
    head = ["--dataset", args.dataset] + (["--model", args.model] if args.model else [])
    sweep = args.global_batches or [args.batch_world * b for b in args.batch_sizes]
    design = Design(world_sizes=tuple(args.world_sizes), batch_size=args.batch_size, global_batch=args.global_batch,
                    batch_world=args.batch_world if sweep else None, batch_sweep=tuple(sorted(set(sweep))),
                    batch_variants=None if args.batch_variants is None else
                    tuple(v.name for v in select_variants(args.batch_variants, args.gpu_per_node)),
                    lr_grid=tuple(args.lr_grid), lr_grid_world=args.lr_grid_world)
    settings = Settings(epochs=args.epochs, lr_rule=args.lr_rule, base_lr=args.base_lr, base_batch=args.base_batch,
                        warmup_epochs=args.warmup_epochs, lr_schedule=args.lr_schedule, dataset=args.dataset,
                        model=args.model, train_args=[], timeout_s=args.run_timeout)
    owned = [flag for v in select_variants(args.variants, args.gpu_per_node)  # what every run's flags set
             for flag in settings.train_flags(RunSpec(v, world_size=2, batch_size=1, seed=0, lr=0.1))]
    check_train_args(args.train_args, *head, owned=owned)
    settings.train_args = shlex.split(args.train_args)
    return design, settings


def _run_specs(specs: Sequence[RunSpec], phase: str, settings: Settings, design: Design, variants: Sequence[Variant],
               out: Path, records: List[Dict[str, Any]], failed: List[str]) -> None:
    """Train (or reuse) ``specs`` in order; their records into ``records``, failures into ``failed``."""
    for index, spec in enumerate(specs, 1):
        log.info("[%s %d/%d] %s: global batch %d, lr %s ...", phase, index, len(specs), spec.key, spec.global_batch,
                 spec.lr)
        started = time.perf_counter()
        run_dir = out / "runs" / spec.key
        status, _ = ensure_run(run_dir, settings.train_flags(spec), {"variant": spec.variant.name},
                               settings.timeout_s)
        if status == "failed":
            failed.append(spec.key)
            continue
        record = collect_run(spec, run_dir, design.grid_cell(spec.cell, variants))
        records.append({**record, "status": status})
        log.info("[%s %d/%d] %s: %s in %.0f s: averaged model %.2f %%, replicas %.2f %% (worst %.2f %%)", phase,
                 index, len(specs), spec.key, status, time.perf_counter() - started,
                 100 * (record["consensus_acc"] or 0), 100 * (record["rank_acc_mean"] or 0),
                 100 * (record["rank_acc_min"] or 0))


def _train_all(design: Design, settings: Settings, variants: Sequence[Variant], seeds: Sequence[int], out: Path
               ) -> Tuple[List[Dict[str, Any]], List[str], List[Tuple[Cell, str]]]:
    """Every run: the grid (and cells without a follower's dependency) first, then the cells that
    reuse a choice. Returns the records, the failed runs' keys and the skipped cells."""
    records: List[Dict[str, Any]] = []
    failed: List[str] = []
    first, _ = plan_runs(design, variants, seeds, settings)
    every = plan_runs(design, variants, seeds, settings, {c.key: 1.0 for c in design.cells(variants)})[0]
    followers = len(every) - len(first)
    log.info("%d runs%s", len(every), f": the grid's {len(first)} first, then {followers} at the lr chosen at "
             f"{design.lr_grid_world} processes" if followers else "")
    _run_specs(first, "grid" if len(design.lr_grid) > 1 else "run", settings, design, variants, out, records, failed)
    done = {s.key for s in first}
    planned, skipped = plan_runs(design, variants, seeds, settings, choose(aggregate(records)))
    _run_specs([s for s in planned if s.key not in done], "chosen lr", settings, design, variants, out, records,
               failed)
    return records, failed, skipped


def run(args: argparse.Namespace) -> int:
    design, settings = check(args)
    variants = select_variants(args.variants, args.gpu_per_node)
    out = Path(args.out)
    # probed before any run starts (read-only, full, /proc, a file in the way); a failed write: one
    # line naming --out; finished runs are kept (a re-run reuses them), else what was created is removed
    with user_output("--out", out, keep=lambda: any((out / "runs").glob("*/*/summary.json"))):
        started = time.perf_counter()
        records, failed, skipped = _train_all(design, settings, variants, args.seeds, out)
        rows = aggregate(records)
        choose(rows)
        chosen = chosen_rows(rows)
        results = study.evaluate(study.study_claims(design, variants), chosen, rule=args.verdict_by)
        tables.write_csv(out / "runs.csv", tables.as_rows(records, drop=SERIES_KEYS))
        tables.write_csv(out / "scalability.csv", tables.as_rows(rows, drop=("seed_accs",)))
        tables.write_csv(out / "comparisons.csv", tables.as_rows(results, drop=("terms", "diffs")))
        text = markdown(rows, chosen, results, variants, settings, design, args.seeds, args.verdict_by)
        atomic_write_text(out / "scalability.md", text)
        atomic_write_json(out / "scalability.json", {
            "experiment": "scalability", "machine": tables.machine_description(),
            "settings": {**settings.__dict__, **design.__dict__, "seeds": args.seeds,
                         "variants": [v.name for v in variants], "preset": _preset_name(args),
                         "verdict_by": args.verdict_by},
            "rows": rows, "comparisons": results, "runs": records,
            "skipped": [{"cell": cell.key, "reason": reason} for cell, reason in skipped], "failed": failed,
            "seconds": time.perf_counter() - started})
        written = [out / name for name in ("scalability.md", "scalability.csv", "comparisons.csv", "runs.csv",
                                           "scalability.json")]
        plots = ((lambda: plot(records, chosen, variants, design, out)) if records and not args.no_plots else None)
        return tables.conclude(text, written, plots, failed)


def _preset_name(args: argparse.Namespace) -> Optional[str]:
    return "quick" if args.quick else "study" if args.study else None
