"""``crossover-sgd experiment scalability``: final accuracy as processes and global batch grow.

Real training runs through the command line (``python -m crossover_sgd train --nproc N ...
--out DIR``), one after another, for every algorithm variant, world size and seed, with a fixed
number of epochs, a fixed per-rank batch (so the global batch grows with the processes) and a
learning-rate rule of the global batch (``--lr-rule linear``: ``lr = base_lr * global / base_batch``).
Optionally (``--batch-sizes``) a second sweep varies the per-rank batch at a fixed world size:
accuracy against the global batch at fixed processes, as in the study's first table.

Variants: ``allreduce`` (AllReduce-SGD), ``sgp`` (1 peer), ``crossover`` (fine segments),
``hierarchical-gG`` (hierarchical crossover, ``--gpu_per_node G``), and the study's ablations
``crossover-no-fair`` (``--fair False``) and ``crossover-no-seg`` (``--segmented False``).

Collected from each run's ``summary.json`` and metrics CSVs: the final accuracy of the averaged
model (``consensus_val_acc``), of every replica (mean and worst rank), and the consensus distance
per epoch; aggregated over seeds (mean, standard deviation, min, max).

Skip and resume: every run lives in ``OUT/runs/<variant>/n<N>-b<B>-s<seed>/``. A re-run reuses a
finished run (its ``summary.json``) when it was made by the same command, continues an
interrupted one from its checkpoint (``--resume``), and starts over one that has none.

Outputs in ``OUT``: ``scalability.md``, ``scalability.csv`` (aggregated), ``runs.csv`` (one row per
run), ``scalability.json`` (everything, with the consensus-distance series) and the plots
``scalability_acc_vs_procs.png``, ``scalability_consensus_distance.png`` and, with a batch sweep,
``scalability_acc_vs_batch.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from crossover_sgd.atomic import atomic_write_json, atomic_write_text, user_output
from crossover_sgd.errors import ConfigError
from crossover_sgd.experiments import tables
from crossover_sgd.flags import train_config

__all__ = ["Variant", "RunSpec", "Settings", "make_variants", "plan_runs", "ensure_run", "collect_run",
           "aggregate", "configure", "run"]

log = logging.getLogger(__name__)

#: Environment variables of launchers: a training child must not think it was started by srun & co.
_LAUNCHER_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "MPI_LOCAL", "TORCHELASTIC_")
_LAUNCHER_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                   "MASTER_PORT", "CROSSOVER_SGD_LAUNCHER")
#: What a run directory records about the command that made it (compared on reuse).
RECORD_FILE = "experiment.json"


@dataclass(frozen=True)
class Variant:
    """An algorithm setting: a name, what it is, and its ``train`` flags."""

    name: str
    description: str
    flags: Tuple[str, ...]
    ranks_per_node: Optional[int] = None

    def skip_reason(self, world_size: int) -> Optional[str]:
        g = self.ranks_per_node
        if g is not None and (world_size % g or world_size // g < 2):
            return f"needs 2 or more nodes of {g} ranks"
        return None


def make_variants(gpu_per_node: Sequence[int] = (2,)) -> Dict[str, Variant]:
    """Every variant, with one hierarchical variant per ranks-per-node value."""
    variants = [Variant("allreduce", "AllReduce-SGD (gradients averaged every step)", ("--algorithm", "allreduce")),
                Variant("sgp", "SGP, 1 peer per round", ("--algorithm", "sgp")),
                Variant("crossover", "Crossover-SGD, fine segments", ("--algorithm", "crossover"))]
    variants += [Variant(f"hierarchical-g{g}", f"hierarchical Crossover-SGD, {g} ranks per node",
                         ("--algorithm", "hierarchical-crossover", "--gpu-per-node", str(g)), ranks_per_node=g)
                 for g in gpu_per_node]
    variants += [Variant("crossover-no-fair", "Crossover-SGD without fairness (ablation)",
                         ("--algorithm", "crossover", "--fair", "False")),
                 Variant("crossover-no-seg", "Crossover-SGD without segmentation (ablation)",
                         ("--algorithm", "crossover", "--segmented", "False"))]
    return {v.name: v for v in variants}


@dataclass(frozen=True)
class RunSpec:
    """One training run of the experiment."""

    variant: Variant
    world_size: int
    batch_size: int
    seed: int

    @property
    def global_batch(self) -> int:
        return self.world_size * self.batch_size

    @property
    def key(self) -> str:
        return f"{self.variant.name}/n{self.world_size}-b{self.batch_size}-s{self.seed}"


@dataclass
class Settings:
    """What every run of the experiment shares."""

    epochs: int = 8
    lr_rule: str = "linear"
    base_lr: float = 0.1
    base_batch: int = 128
    warmup_epochs: float = 1.0
    lr_schedule: str = "cosine"
    dataset: str = "digits"
    model: str = "small_cnn"
    train_args: List[str] = field(default_factory=list)
    timeout_s: float = 1800.0

    def lr(self, global_batch: int) -> float:
        """The learning rate of a run with ``global_batch`` samples per step."""
        ratio = global_batch / self.base_batch
        scale = {"linear": ratio, "sqrt": math.sqrt(ratio), "constant": 1.0}[self.lr_rule]
        return self.base_lr * scale

    def train_flags(self, spec: RunSpec) -> List[str]:
        """``crossover-sgd train`` flags of ``spec`` (without ``--out``/``--resume``)."""
        return ["--nproc", str(spec.world_size), *spec.variant.flags, "--dataset", self.dataset,
                "--model", self.model, "--epochs", str(self.epochs), "--batch-size", str(spec.batch_size),
                "--lr", f"{self.lr(spec.global_batch):.6g}", "--lr-schedule", self.lr_schedule,
                "--warmup-epochs", f"{self.warmup_epochs:g}", "--seed", str(spec.seed),
                "--checkpoint-every", str(self.epochs), "--tag", spec.variant.name, *self.train_args]


def plan_runs(variants: Sequence[Variant], world_sizes: Sequence[int], batch_size: int, seeds: Sequence[int],
              batch_sizes: Sequence[int] = (), batch_world: Optional[int] = None) -> List[RunSpec]:
    """The processes sweep, then the batch sweep (duplicates dropped), smallest runs first."""
    specs: List[RunSpec] = []
    for n in sorted(world_sizes):
        specs += [RunSpec(v, n, batch_size, s) for v in variants for s in seeds]
    if batch_sizes and batch_world is not None:
        specs += [RunSpec(v, batch_world, b, s) for b in sorted(batch_sizes) for v in variants for s in seeds]
    unique: Dict[str, RunSpec] = {}
    for spec in specs:
        unique.setdefault(spec.key, spec)
    return list(unique.values())


# ------------------------------------------------------------------------------------------ running
def _child_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_LAUNCHER_PREFIXES) and k not in _LAUNCHER_NAMES}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run_command(command: List[str], log_path: Path, timeout_s: float) -> int:
    """Run ``command`` with its output in ``log_path``; on timeout SIGTERM it (the local launcher
    forwards it to its ranks), then kill it. Returns the exit code (124 on timeout)."""
    with open(log_path, "ab") as output:
        output.write(("$ " + shlex.join(command) + "\n").encode())
        output.flush()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=_child_env())
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            return 124
        except BaseException:  # Ctrl-C: stop the ranks too, then let the interrupt through
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait()
            raise


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def ensure_run(spec: RunSpec, settings: Settings, root: Path) -> Tuple[str, Path]:
    """Make sure ``spec``'s run is finished: reuse, resume or train it. Returns (status, run dir),
    status one of ``reused``, ``trained``, ``resumed``, ``failed``."""
    run_dir = root / "runs" / spec.key
    flags = settings.train_flags(spec)
    record_path = run_dir / RECORD_FILE
    summary_path = run_dir / "summary.json"
    if record_path.is_file():
        recorded = json.loads(record_path.read_text()).get("flags")
        if recorded != flags:
            raise ConfigError(f"{run_dir} holds a run made with other settings ({shlex.join(recorded or [])}); "
                              f"use another --out, or delete that directory to redo it")
    if summary_path.is_file() and json.loads(summary_path.read_text()).get("status") == "finished":
        return "reused", run_dir
    resume = (run_dir / "checkpoints" / "latest.json").is_file()
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # an unfinished run with nothing to resume from
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record_path, {"flags": flags, "variant": spec.variant.name})
    command = [sys.executable, "-m", "crossover_sgd", "train", *flags, "--out", str(run_dir)]
    if resume:
        command.append("--resume")
    code = _run_command(command, run_dir / "launcher.log", settings.timeout_s)
    if code != 0 or not summary_path.is_file():
        log.error("%s failed (exit code %s); last lines of %s:\n%s", spec.key, code, run_dir / "launcher.log",
                  _tail(run_dir / "launcher.log"))
        return "failed", run_dir
    status = json.loads(summary_path.read_text()).get("status")
    if status != "finished":
        log.error("%s ended with status %r (see %s)", spec.key, status, run_dir / "launcher.log")
        return "failed", run_dir
    return ("resumed" if resume else "trained"), run_dir


def collect_run(spec: RunSpec, run_dir: Path, settings: Settings) -> Dict[str, Any]:
    """One finished run as a record: accuracies, consensus distance per epoch, cost."""
    from crossover_sgd.plotting import load_run

    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = load_run(run_dir)
    rank_accs = [a for a in summary.get("final_val_acc", []) if a is not None]
    ranks = tables.spread(rank_accs)
    first = metrics.ranks[0]
    distances = first.get("consensus_distance", [])
    steps = max(int(summary.get("steps_done") or 0), 1)
    comm = summary.get("comm", {})
    return {
        "variant": spec.variant.name, "algorithm": summary["config"]["algorithm"], "world_size": spec.world_size,
        "batch_size": spec.batch_size, "global_batch": spec.global_batch, "seed": spec.seed,
        "lr": settings.lr(spec.global_batch), "epochs": summary.get("epochs_done"), "steps": summary.get("steps_done"),
        "consensus_acc": first["consensus_val_acc"][-1] if "consensus_val_acc" in first else None,
        "rank_acc_mean": ranks["mean"], "rank_acc_min": ranks["min"], "rank_acc_max": ranks["max"],
        "final_consensus_distance": distances[-1] if distances else None,
        "mean_consensus_distance": sum(distances) / len(distances) if distances else None,
        "final_val_loss": tables.spread(summary.get("final_val_loss", []))["mean"],
        "wall_time_s": summary.get("wall_time_s"), "process_time_s": summary.get("process_time_s"),
        "bytes_sent_per_step_rank0": comm.get("bytes_sent", 0) / steps,
        "run_dir": str(run_dir), "epoch_series": metrics.epochs(), "consensus_distance_series": distances,
        "rank_accs": rank_accs,
    }


SERIES_KEYS = ("epoch_series", "consensus_distance_series", "rank_accs")


def aggregate(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Mean and spread over seeds per (variant, world size, per-rank batch)."""
    groups: Dict[Tuple[str, int, int], List[Dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["variant"], record["world_size"], record["batch_size"]), []).append(record)
    rows = []
    for (variant, n, b), group in groups.items():
        acc = tables.spread(r["consensus_acc"] for r in group)
        row = {"variant": variant, "world_size": n, "batch_size": b, "global_batch": n * b, "lr": group[0]["lr"],
               "seeds": len(group),
               "consensus_acc_mean": acc["mean"], "consensus_acc_std": acc["std"],
               "consensus_acc_min": acc["min"], "consensus_acc_max": acc["max"],
               "rank_acc_mean": tables.spread(r["rank_acc_mean"] for r in group)["mean"],
               "rank_acc_worst": tables.spread(r["rank_acc_min"] for r in group)["min"],
               "final_consensus_distance": tables.spread(r["final_consensus_distance"] for r in group)["mean"],
               "mean_consensus_distance": tables.spread(r["mean_consensus_distance"] for r in group)["mean"],
               "wall_time_s": tables.spread(r["wall_time_s"] for r in group)["mean"],
               "bytes_sent_per_step_rank0": group[0]["bytes_sent_per_step_rank0"]}
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ outputs
def _acc_cell(row: Optional[Dict[str, Any]]) -> str:
    if row is None:
        return "n/a"
    return tables.fmt_pct({"mean": row["consensus_acc_mean"], "std": row["consensus_acc_std"], "count": row["seeds"]})


def markdown(rows: List[Dict[str, Any]], variants: Sequence[Variant], settings: Settings, batch_size: int,
             world_sizes: Sequence[int], seeds: Sequence[int], batch_sizes: Sequence[int],
             batch_world: Optional[int]) -> str:
    by = {(r["variant"], r["world_size"], r["batch_size"]): r for r in rows}
    names = [v.name for v in variants]
    rule = {"linear": f"{settings.base_lr:g} x global batch / {settings.base_batch}",
            "sqrt": f"{settings.base_lr:g} x sqrt(global batch / {settings.base_batch})",
            "constant": f"{settings.base_lr:g}"}[settings.lr_rule]
    parts = [
        "# Learning scalability",
        f"Dataset `{settings.dataset}`, model `{settings.model}`, {settings.epochs} epochs, peak learning rate "
        f"{rule} ({settings.lr_schedule} schedule, {settings.warmup_epochs:g} warmup epoch(s)), seeds "
        f"{', '.join(map(str, seeds))}. Cells: top-1 validation accuracy (%) of the averaged model at the end, "
        "mean ± standard deviation over seeds.",
        "Variants: " + "; ".join(f"`{v.name}`: {v.description}" for v in variants) + ".",
        f"## Accuracy vs processes (per-rank batch {batch_size}: the global batch grows with the processes)",
        tables.markdown_table(["processes (global batch)"] + names,
                              [[f"{n} ({n * batch_size})"] + [_acc_cell(by.get((v, n, batch_size))) for v in names]
                               for n in sorted(world_sizes)]),
    ]
    if batch_sizes and batch_world is not None:
        parts += [f"## Accuracy vs global batch ({batch_world} processes)",
                  tables.markdown_table(["global batch (per rank)"] + names,
                                        [[f"{batch_world * b} ({b})"] + [_acc_cell(by.get((v, batch_world, b)))
                                                                         for v in names] for b in sorted(batch_sizes)])]
    detail = [[r["variant"], r["world_size"], r["global_batch"], f"{r['lr']:.4g}", _acc_cell(r),
               "-" if r["rank_acc_mean"] is None else f"{100 * r['rank_acc_mean']:.2f}",
               "-" if r["rank_acc_worst"] is None else f"{100 * r['rank_acc_worst']:.2f}",
               tables.fmt_sci(r["final_consensus_distance"]), tables.fmt_sci(r["mean_consensus_distance"]),
               f"{r['wall_time_s']:.1f}" if r["wall_time_s"] is not None else "-"]
              for r in sorted(rows, key=lambda r: (r["world_size"], r["batch_size"], names.index(r["variant"])))]
    parts += ["## Replicas and consensus",
              "Averaged model vs the replicas themselves (mean over ranks, and the worst rank over all seeds); "
              "consensus distance `(1/n) sum_i ||x_i - mean||^2` at the last evaluation and averaged over epochs.",
              tables.markdown_table(["variant", "processes", "global batch", "lr", "averaged model (%)",
                                     "replicas, mean (%)", "worst replica (%)", "final consensus distance",
                                     "mean consensus distance", "training time (s)"], detail)]
    return "\n\n".join(parts) + "\n"


def plot(records: List[Dict[str, Any]], rows: List[Dict[str, Any]], variants: Sequence[Variant], out: Path,
         batch_size: int, batch_world: Optional[int], batch_sizes: Sequence[int]) -> List[Path]:
    """Accuracy vs processes, accuracy vs global batch, consensus distance per epoch."""
    from crossover_sgd.plotting import pyplot, save_figure

    plt = pyplot()
    names = [v.name for v in variants]
    written = []

    def errorbar_figure(filename: str, select, x_of, xlabel: str, title: str) -> None:
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        ticks = set()
        for index, name in enumerate(names):
            points = sorted(((x_of(r), r) for r in rows if r["variant"] == name and select(r)), key=lambda p: p[0])
            if not points:
                continue
            ticks.update(p[0] for p in points)
            dodge = 2 ** (0.025 * (index - (len(names) - 1) / 2))  # keeps equal values' error bars apart
            ax.errorbar([p[0] * dodge for p in points], [100 * p[1]["consensus_acc_mean"] for p in points],
                        yerr=[100 * p[1]["consensus_acc_std"] for p in points], marker="o", ms=4, capsize=3,
                        color=f"C{index}", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 validation accuracy of the averaged model (%)", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        written.append(save_figure(fig, out / filename))

    errorbar_figure("scalability_acc_vs_procs.png", lambda r: r["batch_size"] == batch_size, lambda r: r["world_size"],
                    "processes (log2 scale)",
                    f"Accuracy vs processes, per-rank batch {batch_size} (mean ± std over seeds)")
    if batch_sizes and batch_world is not None:  # else the global batch is processes x batch_size: same figure
        errorbar_figure("scalability_acc_vs_batch.png", lambda r: r["world_size"] == batch_world,
                        lambda r: r["global_batch"], "global batch (samples per step, log2 scale)",
                        f"Accuracy vs global batch, {batch_world} processes (mean ± std over seeds)")

    largest = max((r["world_size"] for r in records if r["batch_size"] == batch_size), default=None)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for index, name in enumerate(names):
        series = [r for r in records if r["variant"] == name and r["world_size"] == largest
                  and r["batch_size"] == batch_size and r["consensus_distance_series"]]
        if not series or not any(v > 0 for r in series for v in r["consensus_distance_series"]):
            continue
        length = min(len(r["consensus_distance_series"]) for r in series)
        epochs = series[0]["epoch_series"][:length]
        values = [[r["consensus_distance_series"][i] for r in series] for i in range(length)]
        ax.plot(epochs, [sum(v) / len(v) for v in values], marker="o", ms=3, color=f"C{index}", label=name)
        if len(series) > 1:
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=f"C{index}",
                            alpha=0.18, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("(1/n) sum_i ||x_i - mean||^2 (squared parameter units)", fontsize=8)
    ax.set_title(f"Consensus distance per epoch, {largest} processes (mean over seeds, band: min-max; "
                 "AllReduce: 0, not drawn)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    written.append(save_figure(fig, out / "scalability_consensus_distance.png"))
    return written


# ------------------------------------------------------------------------------------------ command line
DEFAULT_VARIANTS = ("allreduce", "sgp", "crossover", "hierarchical", "crossover-no-fair", "crossover-no-seg")


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = Settings()
    parser.add_argument("--world-sizes", "--world_sizes", type=int, nargs="+", default=[4, 8, 16],
                        help="numbers of processes (each a local rank, ~300 MB of memory)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds (one run each)")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        choices=["allreduce", "sgp", "crossover", "hierarchical", "crossover-no-fair",
                                 "crossover-no-seg"],
                        help="algorithm variants (hierarchical: one per --gpu-per-node value)")
    parser.add_argument("--gpu-per-node", "--gpu_per_node", type=int, nargs="+", default=[2],
                        help="ranks per node of the hierarchical variant")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", "--batch_size", type=int, default=16, help="per-rank batch (fixed)")
    parser.add_argument("--batch-sizes", "--batch_sizes", type=int, nargs="+", default=[],
                        help="also sweep these per-rank batches at --batch-world processes")
    parser.add_argument("--batch-world", "--batch_world", type=int, default=None,
                        help="processes of the batch sweep (default: the largest of --world-sizes)")
    parser.add_argument("--lr-rule", default=d.lr_rule, choices=("linear", "sqrt", "constant"),
                        help="peak learning rate as a function of the global batch")
    parser.add_argument("--base-lr", type=float, default=d.base_lr, help="learning rate at --base-batch")
    parser.add_argument("--base-batch", type=int, default=d.base_batch, help="global batch of --base-lr")
    parser.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    parser.add_argument("--lr-schedule", default=d.lr_schedule)
    parser.add_argument("--dataset", default=d.dataset)
    parser.add_argument("--model", default=d.model)
    parser.add_argument("--train-args", default="", help="more flags for every `crossover-sgd train` (one string)")
    parser.add_argument("--run-timeout", type=float, default=d.timeout_s, help="seconds one run may take")
    parser.add_argument("--out", default="runs/experiments/scalability",
                        help="output directory (re-running with the same one reuses finished runs)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    parser.add_argument("--quick", action="store_true",
                        help="2 processes, 1 seed, 2 epochs, allreduce and crossover (for tests)")
    return parser


def _settings_from(args: argparse.Namespace) -> Settings:
    return Settings(epochs=args.epochs, lr_rule=args.lr_rule, base_lr=args.base_lr, base_batch=args.base_batch,
                    warmup_epochs=args.warmup_epochs, lr_schedule=args.lr_schedule, dataset=args.dataset,
                    model=args.model, train_args=shlex.split(args.train_args), timeout_s=args.run_timeout)


def _check(args: argparse.Namespace) -> None:
    if args.quick:
        args.world_sizes, args.seeds, args.epochs, args.variants = [2], [0], 2, ["allreduce", "crossover"]
        args.batch_sizes, args.warmup_epochs = [], 0.0
    if any(n < 2 for n in args.world_sizes):
        raise ConfigError("--world-sizes: every world size must be >= 2")
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--base-batch", args.base_batch)):
        if value < 1:
            raise ConfigError(f"{flag} {value} is invalid: use an integer >= 1")
    if any(b < 1 for b in args.batch_sizes) or any(g < 1 for g in args.gpu_per_node):
        raise ConfigError("--batch-sizes and --gpu-per-node take integers >= 1")
    if not args.base_lr > 0 or args.run_timeout <= 0:
        raise ConfigError("--base-lr and --run-timeout must be > 0")
    if len(set(args.seeds)) != len(args.seeds):
        raise ConfigError("--seeds: give each seed once")
    if args.batch_sizes and args.batch_world is None:
        args.batch_world = max(args.world_sizes)
    _check_train_args(args.train_args)


def _check_train_args(text: str) -> None:
    """``--train-args`` are flags of ``crossover-sgd train``: refuse bad ones before any run starts."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"--train-args {text!r} is not a valid command line: {exc}") from None
    try:
        train_config(argv)
    except ConfigError as exc:
        raise ConfigError(f"--train-args {text!r}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    _check(args)
    settings = _settings_from(args)
    table = make_variants(args.gpu_per_node)
    variants = [v for name in args.variants
                for v in ([table[f"hierarchical-g{g}"] for g in args.gpu_per_node] if name == "hierarchical"
                          else [table[name]])]
    specs = plan_runs(variants, args.world_sizes, args.batch_size, args.seeds, args.batch_sizes, args.batch_world)
    out = Path(args.out)
    # probed before any run starts (read-only, full, /proc, a file in the way); a failed write: one
    # line naming --out; finished runs are kept (a re-run reuses them), else what was created is removed
    with user_output("--out", out, keep=lambda: any((out / "runs").glob("*/*/summary.json"))):
        records, failed, skipped = [], [], []
        started = time.perf_counter()
        for index, spec in enumerate(specs, 1):
            reason = spec.variant.skip_reason(spec.world_size)
            if reason is not None:
                skipped.append({"run": spec.key, "reason": reason})
                log.info("[%d/%d] %s: skipped (%s)", index, len(specs), spec.key, reason)
                continue
            log.info("[%d/%d] %s: global batch %d, lr %.4g ...", index, len(specs), spec.key, spec.global_batch,
                     settings.lr(spec.global_batch))
            run_started = time.perf_counter()
            status, run_dir = ensure_run(spec, settings, out)
            if status == "failed":
                failed.append(spec.key)
                continue
            record = collect_run(spec, run_dir, settings)
            records.append({**record, "status": status})
            log.info("[%d/%d] %s: %s in %.0f s: averaged model %.2f %%, replicas %.2f %% (worst %.2f %%)", index,
                     len(specs), spec.key, status, time.perf_counter() - run_started,
                     100 * (record["consensus_acc"] or 0), 100 * (record["rank_acc_mean"] or 0),
                     100 * (record["rank_acc_min"] or 0))
        rows = aggregate(records)
        tables.write_csv(out / "runs.csv", tables.as_rows(records, drop=SERIES_KEYS))
        tables.write_csv(out / "scalability.csv", rows)
        text = markdown(rows, variants, settings, args.batch_size, args.world_sizes, args.seeds, args.batch_sizes,
                        args.batch_world)
        atomic_write_text(out / "scalability.md", text)
        atomic_write_json(out / "scalability.json", {
            "experiment": "scalability", "machine": tables.machine_description(),
            "settings": {**settings.__dict__, "world_sizes": sorted(args.world_sizes), "seeds": args.seeds,
                         "variants": [v.name for v in variants], "batch_size": args.batch_size,
                         "batch_sizes": args.batch_sizes, "batch_world": args.batch_world},
            "rows": rows, "runs": records, "skipped": skipped, "failed": failed,
            "seconds": time.perf_counter() - started})
        written = [out / "scalability.md", out / "scalability.csv", out / "runs.csv", out / "scalability.json"]
        plots = ((lambda: plot(records, rows, variants, out, args.batch_size, args.batch_world, args.batch_sizes))
                 if records and not args.no_plots else None)
        return tables.conclude(text, written, plots, failed)
