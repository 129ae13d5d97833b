"""``crossover-sgd experiment noniid``: the peer-to-peer family under non-IID data, against one node.

For every seed: one single-node reference (``crossover-sgd train --nproc 1 --algorithm allreduce``:
the same model on all the training data) and, for every method of the peer-to-peer family,
``crossover-sgd train --nproc N --algorithm METHOD --partition noniid --graph ring`` (each node 8
of the 10 classes, the original research code's rule; a held-out part of its own data as its
validation set). Runs go through the command line one after another, each bounded in time
(``--run-timeout``: SIGTERM, then kill), as in :mod:`~crossover_sgd.experiments.scalability`.

Collected from each node's ``nodes/<node>.csv``: the final ``test_acc`` (the data's shared
validation set, the same for every node: the number the original reports) and ``val_acc`` (the
node's own held-out data), and the test accuracy per epoch. The single node's test accuracy is
``val_acc`` of its ``metrics_rank0.csv`` (the same shared set). Per method, over all nodes and
seeds: mean, standard deviation, min and max of the final test accuracy, the gap of the mean to
the single node's mean, and the worst node.

Optimiser settings (shared by every run, the original's: plain SGD): ``--momentum 0``,
``--weight-decay 0``, batch 32 per node, cosine schedule without warmup. The primal-dual methods
(PDMM/ADMM-SGD, PDMM/ADMM-ISVR) and CADMM replace the optimizer's step with their own update and
have no momentum; momentum for D-SGD and Gossip SGD alone would compare optimisers, not methods.

Learning rates (``DEFAULT_LRS``) were chosen for ``small_cnn`` on digits, 8 nodes on a ring
(``--round 1``: every edge every step), 40 epochs, each method's other options at their defaults,
with this command's grid (``--lr METHOD=A,B``): two values per method, three for the single node,
on seed 0, the short 20-epoch runs beforehand having placed the range. The pick is by the mean over
nodes of the nodes' accuracy on their *own* held-out data (``val_acc``), ties by their loss on it;
never by the test set. The single node, which has no held-out data of its own, by its final
training loss. The grid's numbers are in ``docs/results.md``. Why the values differ by method:

* ``single``, ``dsgd``, ``gossip-sgd``, ``cadmm`` take plain SGD steps of size ``lr`` (plus
  averaging, or CADMM's penalty ``c * 2E * x``, small at ``rho_init`` 0.1). Without momentum
  small_cnn wants large steps: the larger value of each grid won (single 1 of 0.1/0.3/1, D-SGD
  and Gossip 2 of 1/2, CADMM 1 of 0.3/1).
* ``pdmm-isvr``/``admm-isvr`` with ``piw 1`` and ``K = 1``: ``eta = 1/lr``, so the update is
  ``w = (w - lr*g + sum_j A z_j) / (1 + E)``: the gradient step is ``lr/(1+E)``, a third of ``lr``
  on the ring (E = 2). Yet lr 1 (a step of 1/3) is near their edge of stability: lr 3 diverged in
  a 20-epoch check, and lr 1 diverged at epoch 9 in an IID control (``--partition iid``, seed 0),
  though in none of the non-IID runs. Picked: 1 of 0.5/1 (0.5 is 1-2 points lower at 40 epochs).
* ``pdmm-sgd``/``admm-sgd``: ``w = (mu*w - g + ...) / (mu + s*(eta+rho))`` with ``mu = 1/lr`` and
  ``s = sqrt(fan-in)``: the gradient step of a tensor is ``lr / (1 + lr*s*1.1)``, which saturates
  at ``1/(1.1*s)`` (0.3 for the first convolution, 0.05 for the second, 0.03 for the classifier):
  beyond lr ~ 1 the lr changes little (3 and 10 end within a point of each other); ``eta`` and
  ``rho`` (the original's 1 and 0.1) bound the step. Picked: PDMM-SGD 3, ADMM-SGD 10.

``--lr`` takes ``METHOD=LR`` (or ``METHOD=A,B,C``: a grid, tuned on the first seed as above; the
other seeds run the pick) or a bare number for every method and the single node; ``single``
names the single-node reference.

Skip and resume: every run lives in ``OUT/runs/<method>/lr<LR>-s<seed>/``; a re-run reuses a
finished run made by the same command (an unfinished one is started over).

Outputs in ``OUT``: ``noniid.md`` (tables), ``noniid.csv`` (one row per method), ``nodes.csv``
(one row per node, method and seed), ``noniid.json`` (everything, with the per-epoch series) and
the plots ``noniid_test_acc.png`` (test accuracy per epoch, mean over nodes and seeds, band:
min-max) and ``noniid_final_nodes.png`` (every node's final test accuracy per method).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from crossover_sgd.atomic import atomic_write_json, atomic_write_text, user_output
from crossover_sgd.errors import ConfigError
from crossover_sgd.experiments import tables
from crossover_sgd.experiments.runs import RunSettings, check_train_args, ensure_run as ensure_train_run

__all__ = ["METHODS", "SINGLE", "DEFAULT_LRS", "Settings", "RunSpec", "parse_lrs", "ensure_run", "collect_run",
           "pick_lr", "aggregate", "markdown", "plot", "configure", "run"]

log = logging.getLogger(__name__)

#: The peer-to-peer methods, in the order of the tables.
METHODS = ("dsgd", "gossip-sgd", "pdmm-sgd", "admm-sgd", "pdmm-isvr", "admm-isvr", "cadmm")
#: The name of the single-node reference (``--nproc 1 --algorithm allreduce``, all the data).
SINGLE = "single"
#: Learning rate per method (see the module docstring: a grid on seed 0, 8 nodes, 40 epochs).
DEFAULT_LRS: Dict[str, float] = {SINGLE: 1.0, "dsgd": 2.0, "gossip-sgd": 2.0, "pdmm-sgd": 3.0, "admm-sgd": 10.0,
                                 "pdmm-isvr": 1.0, "admm-isvr": 1.0, "cadmm": 1.0}
DESCRIPTIONS = {SINGLE: "one node, all the training data (AllReduce-SGD, 1 process)",
                "dsgd": "D-SGD", "gossip-sgd": "Gossip SGD", "pdmm-sgd": "PDMM-SGD (KDD 2020)",
                "admm-sgd": "ADMM-SGD (KDD 2020)", "pdmm-isvr": "PDMM-ISVR (ICML 2021)",
                "admm-isvr": "ADMM-ISVR (ICML 2021)", "cadmm": "decentralized consensus ADMM"}
PARTITIONS = ("noniid", "iid", "dirichlet")


@dataclass
class Settings(RunSettings):
    """What every run of the experiment shares."""

    nodes: int = 8
    epochs: int = 40
    batch_size: int = 32
    warmup_epochs: float = 0.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    partition: str = "noniid"
    graph: str = "ring"
    model: Optional[str] = "small_cnn"
    retries: int = 1

    def train_flags(self, spec: "RunSpec") -> List[str]:
        """``crossover-sgd train`` flags of ``spec`` (without ``--out``)."""
        if spec.method == SINGLE:
            head = ["--nproc", "1", "--algorithm", "allreduce"]
        else:
            head = ["--nproc", str(self.nodes), "--algorithm", spec.method, "--partition", self.partition,
                    "--graph", self.graph]
        model = ["--model", self.model] if self.model else []
        return [*head, "--dataset", self.dataset, *model, "--epochs", str(self.epochs),
                "--batch-size", str(self.batch_size), "--lr", f"{spec.lr:g}", "--lr-schedule", self.lr_schedule,
                "--warmup-epochs", f"{self.warmup_epochs:g}", "--momentum", f"{self.momentum:g}",
                "--weight-decay", f"{self.weight_decay:g}", "--seed", str(spec.seed),
                "--checkpoint-every", str(self.epochs), "--tag", spec.method, *self.train_args]


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method (or ``single``), its learning rate, a seed."""

    method: str
    lr: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.method}/lr{self.lr:g}-s{self.seed}"


def parse_lrs(items: Sequence[str], methods: Sequence[str]) -> Dict[str, List[float]]:
    """``--lr`` values (``METHOD=LR[,LR...]`` or a bare ``LR`` for all) -> learning rates per
    method, the defaults filled in; a ConfigError for anything else."""
    lrs: Dict[str, List[float]] = {m: [DEFAULT_LRS[m]] for m in (SINGLE, *methods)}
    known = (SINGLE, *METHODS)
    for item in items:
        for part in item.replace(" ", ";").split(";"):
            if not part:
                continue
            name, sep, values = part.rpartition("=")
            targets = [name] if sep else list(lrs)
            if sep and name not in known:
                raise ConfigError(f"--lr {part!r}: unknown method {name!r} (use one of {', '.join(known)})")
            try:
                numbers = [float(v) for v in values.split(",") if v]
            except ValueError:
                raise ConfigError(f"--lr {part!r}: learning rates are numbers "
                                  "(METHOD=LR or METHOD=LR,LR,...)") from None
            if not numbers or not all(math.isfinite(v) and v > 0 for v in numbers):
                raise ConfigError(f"--lr {part!r}: give learning rates > 0")
            if len(set(numbers)) != len(numbers):
                raise ConfigError(f"--lr {part!r}: give each learning rate once")
            for target in targets:
                if target in lrs:
                    lrs[target] = numbers
    return lrs


# ------------------------------------------------------------------------------------------ running
def ensure_run(spec: RunSpec, settings: Settings, root: Path) -> Tuple[str, Path]:
    """Make sure ``spec``'s run is finished: reuse it or train it (an unfinished one from the
    start; a failed one, not a timed-out one, once more: on a shared machine a rank's rendezvous
    port can be taken in between). Returns (status, run dir), status ``reused``, ``trained`` or
    ``failed``."""
    for attempt in range(1 + settings.retries):
        status, run_dir, code = _ensure_run_once(spec, settings, root)
        if status != "failed" or code == 124 or attempt == settings.retries:
            return status, run_dir
        log.warning("%s: trying again (attempt %d of %d)", spec.key, attempt + 2, 1 + settings.retries)
    raise AssertionError("unreachable")


def _ensure_run_once(spec: RunSpec, settings: Settings, root: Path) -> Tuple[str, Path, Optional[int]]:
    run_dir = root / "runs" / spec.key
    status, code = ensure_train_run(run_dir, settings.train_flags(spec), {"method": spec.method}, settings.timeout_s,
                                    resume=False)
    return status, run_dir, code


def _last(values: Sequence[float]) -> Optional[float]:
    value = values[-1] if values else None
    return value if value is not None and math.isfinite(value) else None


def collect_run(spec: RunSpec, run_dir: Path) -> Dict[str, Any]:
    """One finished run as a record: per node the final accuracies and the test accuracy per epoch."""
    from crossover_sgd.plotting import load_run

    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = load_run(run_dir)
    if spec.method == SINGLE:  # metrics_rank0.csv: val_* is the shared validation set, the nodes' test_*
        first = metrics.ranks[0]
        columns = {"node0": {"epoch": first["epoch"], "test_acc": first["val_acc"], "test_loss": first["val_loss"],
                             "train_loss": first["train_loss"]}}
    else:
        columns = metrics.nodes
    nodes = []
    for name, col in columns.items():
        nodes.append({"node": name, "final_test_acc": _last(col.get("test_acc", [])),
                      "final_val_acc": _last(col.get("val_acc", [])),
                      "final_val_loss": _last(col.get("val_loss", [])) if spec.method != SINGLE else None,
                      "final_test_loss": _last(col.get("test_loss", [])),
                      "final_train_loss": _last(col.get("train_loss", [])),
                      "epochs": [int(e) for e in col.get("epoch", [])],
                      "test_acc_series": list(col.get("test_acc", []))})
    return {"method": spec.method, "lr": spec.lr, "seed": spec.seed,
            "algorithm": summary["config"]["algorithm"], "world_size": summary.get("world_size"),
            "epochs": summary.get("epochs_done"), "steps": summary.get("steps_done"),
            "steps_per_epoch": summary.get("steps_per_epoch"), "wall_time_s": summary.get("wall_time_s"),
            "process_time_s": summary.get("process_time_s"), "nodes": nodes}


def selection_score(record: Dict[str, Any]) -> float:
    """How a learning rate of a grid is judged on the first seed (higher is better): the mean over
    nodes of the final accuracy on their own held-out data; the single node (no held-out data of
    its own: its validation set is the test set) by minus its final training loss."""
    if record["method"] == SINGLE:
        losses = [n["final_train_loss"] for n in record["nodes"] if n["final_train_loss"] is not None]
        return -sum(losses) / len(losses) if losses else -math.inf
    stats = tables.spread(n["final_val_acc"] for n in record["nodes"])
    return stats["mean"] if stats["mean"] is not None else -math.inf


def selection_loss(record: Dict[str, Any]) -> float:
    """The tie-break of :func:`selection_score` (lower is better): the nodes' mean loss on their
    own held-out data (the single node: its training loss). The held-out sets are small (about
    18 images per node of digits): near consensus the nodes agree, and accuracies tie."""
    key = "final_train_loss" if record["method"] == SINGLE else "final_val_loss"
    stats = tables.spread(n.get(key) for n in record["nodes"])
    return stats["mean"] if stats["mean"] is not None else math.inf


def pick_lr(records: Sequence[Dict[str, Any]]) -> Optional[float]:
    """The learning rate of the best-scoring record (on a tie: the lower held-out loss, then the
    smaller lr)."""
    if not records:
        return None
    return max(records, key=lambda r: (selection_score(r), -selection_loss(r), -r["lr"]))["lr"]


# ------------------------------------------------------------------------------------------ tables
def aggregate(records: Sequence[Dict[str, Any]], methods: Sequence[str]) -> List[Dict[str, Any]]:
    """One row per method (single first): statistics of the final per-node test accuracy over
    nodes and seeds, the gap to the single node's mean, the worst node."""
    rows = []
    single_mean = None
    for method in (SINGLE, *methods):
        runs = [r for r in records if r["method"] == method]
        if not runs:
            continue
        per_node = [(n["final_test_acc"], n["node"], r["seed"]) for r in runs for n in r["nodes"]
                    if n["final_test_acc"] is not None]
        test = tables.spread(v for v, _, _ in per_node)
        val = tables.spread(n["final_val_acc"] for r in runs for n in r["nodes"])
        seed_means = tables.spread(tables.spread(n["final_test_acc"] for n in r["nodes"])["mean"] for r in runs)
        worst = min(per_node, default=None)
        if method == SINGLE:
            single_mean = test["mean"]
        gap = None if single_mean is None or test["mean"] is None else test["mean"] - single_mean
        rows.append({
            "method": method, "lr": runs[0]["lr"], "seeds": len(runs),
            "nodes": max(len(r["nodes"]) for r in runs), "values": test["count"],
            "test_acc_mean": test["mean"], "test_acc_std": test["std"], "test_acc_min": test["min"],
            "test_acc_max": test["max"], "seed_mean_std": seed_means["std"],
            "gap_to_single": gap, "worst_node": None if worst is None else f"{worst[1]}/s{worst[2]}",
            "worst_node_acc": None if worst is None else worst[0],
            "val_acc_mean": val["mean"], "val_acc_min": val["min"],
            "wall_time_s_mean": tables.spread(r["wall_time_s"] for r in runs)["mean"],
        })
    return rows


def _pct(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def markdown(rows: Sequence[Dict[str, Any]], settings: Settings, seeds: Sequence[int],
             tuning: Sequence[Dict[str, Any]]) -> str:
    """The experiment's tables as Markdown."""
    table = [[f"`{r['method']}`", f"{r['lr']:g}", f"{r['nodes']} x {r['seeds']}",
              f"{_pct(r['test_acc_mean'])} ± {_pct(r['test_acc_std'])}",
              f"{_pct(r['test_acc_min'])} - {_pct(r['test_acc_max'])}",
              "-" if r["gap_to_single"] is None else f"{100 * r['gap_to_single']:+.2f}",
              f"{_pct(r['worst_node_acc'])} ({r['worst_node']})", _pct(r["val_acc_mean"])]
             for r in rows]
    parts = [
        "# Peer-to-peer family under non-IID data",
        f"Dataset `{settings.dataset}`, model `{settings.model}`, {settings.nodes} nodes on a `{settings.graph}`, "
        f"`--partition {settings.partition}`, {settings.epochs} epochs, batch {settings.batch_size} per node, "
        f"momentum {settings.momentum:g}, weight decay {settings.weight_decay:g}, {settings.lr_schedule} schedule, "
        f"seeds {', '.join(map(str, seeds))}. The single node trains on all the training data "
        "(`--nproc 1 --algorithm allreduce`)."
        + (f" More `train` flags, every run: `{shlex.join(settings.train_args)}`." if settings.train_args else ""),
        "Final top-1 accuracy (%) on the shared test set (the data's validation set, the same for every node), "
        "over every node and seed: mean ± standard deviation, min - max, the gap of the mean to the single node's "
        "(percentage points), the worst node (node/seed); the last column is the mean accuracy of the nodes on "
        "their own held-out data (non-IID: only their own classes).",
        tables.markdown_table(["method", "lr", "nodes x seeds", "test acc (%)", "min - max (%)",
                               "gap to single (pp)", "worst node (%)", "own val acc (%)"], table),
    ]
    if tuning:
        grid = [[f"`{t['method']}`", f"{t['lr']:g}", "-" if t["method"] == SINGLE else _pct(t["score"]),
                 f"{t['tie_break_loss']:.4f}", _pct(t["test_acc_mean"]), "**picked**" if t["picked"] else ""]
                for t in tuning]
        parts += ["## Learning-rate grid (first seed)",
                  "Picked by the nodes' mean accuracy on their own held-out data, ties by their mean loss on it "
                  "(never the test set); the single node, which has no held-out data of its own, by its final "
                  "training loss. The test accuracy is shown, not used.",
                  tables.markdown_table(["method", "lr", "own val acc (%)", "own val loss (single: train loss)",
                                         "test acc (%)", ""], grid)]
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------ plots
def _series(records: Sequence[Dict[str, Any]]) -> Tuple[List[int], List[float], List[float], List[float]]:
    """Per epoch (those every node reached): mean, min and max of the test accuracy over all the
    nodes of ``records``."""
    nodes = [n for r in records for n in r["nodes"] if n["test_acc_series"]]
    if not nodes:
        return [], [], [], []
    length = min(len(n["test_acc_series"]) for n in nodes)
    epochs = nodes[0]["epochs"][:length]
    values = [[n["test_acc_series"][i] for n in nodes] for i in range(length)]
    return (epochs, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values])


def plot(records: Sequence[Dict[str, Any]], methods: Sequence[str], settings: Settings, out: Path) -> List[Path]:
    """Test accuracy per epoch (one line per method, band: min-max over nodes and seeds, the
    single node dashed) and every node's final test accuracy per method."""
    from crossover_sgd.plotting import pyplot, save_figure

    plt = pyplot()
    written = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for method in (SINGLE, *methods):
        epochs, mean, low, high = _series([r for r in records if r["method"] == method])
        if not epochs:
            continue
        style = (dict(color="black", ls="--", lw=1.6) if method == SINGLE  # a method's colour: the same in every figure
                 else dict(color=f"C{METHODS.index(method)}", lw=1.4))
        ax.plot(epochs, [100 * v for v in mean], label=method, **style)
        ax.fill_between(epochs, [100 * v for v in low], [100 * v for v in high], color=style["color"],
                        alpha=0.08 if method == SINGLE else 0.13, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{settings.dataset}, {settings.model}, {settings.nodes} nodes ({settings.graph}), "
                 f"{settings.partition}: mean over nodes and seeds, band: min-max", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    written.append(save_figure(fig, out / "noniid_test_acc.png"))

    fig, ax = plt.subplots(figsize=(8, 4.4))
    names = [m for m in (SINGLE, *methods) if any(r["method"] == m for r in records)]
    seeds = sorted({r["seed"] for r in records})
    single = tables.spread(n["final_test_acc"] for r in records if r["method"] == SINGLE for n in r["nodes"])
    if single["mean"] is not None:
        ax.axhline(100 * single["mean"], color="black", ls="--", lw=1, label="single node (mean)")
    for x, method in enumerate(names):
        for k, seed in enumerate(seeds):
            values = [n["final_test_acc"] for r in records if r["method"] == method and r["seed"] == seed
                      for n in r["nodes"] if n["final_test_acc"] is not None]
            dx = (k - (len(seeds) - 1) / 2) * 0.18
            ax.scatter([x + dx] * len(values), [100 * v for v in values], s=14, color=f"C{k}", alpha=0.75,
                       label=f"seed {seed}" if x == 0 else None)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_ylabel("final top-1 test accuracy (%)")
    ax.set_title("Every node's final test accuracy (one dot per node; colour: seed)", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    written.append(save_figure(fig, out / "noniid_final_nodes.png"))
    return written


# ------------------------------------------------------------------------------------------ command line
def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = Settings()
    parser.add_argument("--nodes", type=int, default=d.nodes, help="nodes (processes) of every peer-to-peer run")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...; one run each)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated peer-to-peer methods: " + ", ".join(METHODS))
    parser.add_argument("--lr", action="append", default=[], metavar="METHOD=LR[,LR...]",
                        help="learning rate of a method (several: a grid tuned on the first seed), or a bare LR for "
                             "all; 'single' is the single-node reference; repeatable. Defaults: "
                             + ", ".join(f"{k}={v:g}" for k, v in DEFAULT_LRS.items()))
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="per-node batch")
    parser.add_argument("--momentum", type=float, default=d.momentum)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--lr-schedule", default=d.lr_schedule)
    parser.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    parser.add_argument("--partition", default=d.partition, choices=PARTITIONS,
                        help="how the training data is split over the nodes (iid: a control)")
    parser.add_argument("--graph", default=d.graph, help="the nodes' graph (crossover-sgd train --graph)")
    parser.add_argument("--dataset", default=d.dataset)
    parser.add_argument("--model", default=d.model)
    parser.add_argument("--train-args", default="", help="more flags for every `crossover-sgd train` (one string)")
    parser.add_argument("--run-timeout", type=float, default=d.timeout_s, help="seconds one run may take")
    parser.add_argument("--retries", type=int, default=d.retries,
                        help="start a failed run (not a timed-out one) over this many times")
    parser.add_argument("--out", default="runs/experiments/noniid",
                        help="output directory (re-running with the same one reuses finished runs)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    return parser


def _methods(text: str) -> List[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods {text!r}: use a comma-separated list of {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods {text!r}: give each method once")
    return methods


def _check(args: argparse.Namespace) -> None:
    if args.nodes < 2:
        raise ConfigError(f"--nodes {args.nodes} is invalid: a peer-to-peer run needs 2 or more nodes")
    for flag, value in (("--seeds", args.seeds), ("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ConfigError(f"{flag} {value} is invalid: use an integer >= 1")
    if args.first_seed < 0:
        raise ConfigError("--first-seed must be >= 0")
    if not 0 <= args.momentum < 1 or args.weight_decay < 0 or args.warmup_epochs < 0:
        raise ConfigError("--momentum must be in [0, 1), --weight-decay and --warmup-epochs >= 0")
    if not args.run_timeout > 0 or args.retries < 0:
        raise ConfigError("--run-timeout must be > 0, --retries >= 0")
    bare = _settings_from(argparse.Namespace(**{**vars(args), "train_args": ""}))
    owned = [flag for method in (SINGLE, *METHODS) for flag in bare.train_flags(RunSpec(method, lr=0.1, seed=0))]
    check_train_args(args.train_args, owned=owned)  # flags every run gets from the experiment are refused


def _settings_from(args: argparse.Namespace) -> Settings:
    return Settings(nodes=args.nodes, epochs=args.epochs, batch_size=args.batch_size, lr_schedule=args.lr_schedule,
                    warmup_epochs=args.warmup_epochs, momentum=args.momentum, weight_decay=args.weight_decay,
                    partition=args.partition, graph=args.graph, dataset=args.dataset, model=args.model,
                    train_args=shlex.split(args.train_args), timeout_s=args.run_timeout, retries=args.retries)


def run(args: argparse.Namespace) -> int:
    _check(args)
    methods = _methods(args.methods)
    lrs = parse_lrs(args.lr, methods)
    settings = _settings_from(args)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    out = Path(args.out)
    with user_output("--out", out, keep=lambda: any((out / "runs").glob("*/*/summary.json"))):
        records: List[Dict[str, Any]] = []
        tuning: List[Dict[str, Any]] = []
        failed: List[str] = []
        started = time.perf_counter()
        total = sum(len(v) + len(seeds) - 1 for v in lrs.values())
        count = 0

        def one(spec: RunSpec) -> Optional[Dict[str, Any]]:
            nonlocal count
            count += 1
            log.info("[%d/%d] %s ...", count, total, spec.key)
            run_started = time.perf_counter()
            status, run_dir = ensure_run(spec, settings, out)
            if status == "failed":
                failed.append(spec.key)
                return None
            record = {**collect_run(spec, run_dir), "status": status}
            accs = tables.spread(n["final_test_acc"] for n in record["nodes"])
            log.info("[%d/%d] %s: %s in %.0f s: test accuracy mean %.2f %%, worst node %.2f %%", count, total,
                     spec.key, status, time.perf_counter() - run_started, 100 * (accs["mean"] or 0),
                     100 * (accs["min"] or 0))
            return record

        for method in (SINGLE, *methods):
            grid = lrs[method]
            first = [r for r in (one(RunSpec(method, lr, seeds[0])) for lr in grid) if r is not None]
            picked = pick_lr(first) if len(grid) > 1 else grid[0]
            if len(grid) > 1:
                for r in first:
                    tuning.append({"method": method, "lr": r["lr"], "score": selection_score(r),
                                   "tie_break_loss": selection_loss(r),
                                   "test_acc_mean": tables.spread(n["final_test_acc"] for n in r["nodes"])["mean"],
                                   "picked": r["lr"] == picked})
                log.info("%s: lr %s picked on seed %d (of %s)", method, picked, seeds[0], grid)
            if picked is None:
                continue
            records += [r for r in first if r["lr"] == picked]
            for seed in seeds[1:]:
                record = one(RunSpec(method, picked, seed))
                if record is not None:
                    records.append(record)
        rows = aggregate(records, methods)
        node_rows = [{"method": r["method"], "lr": r["lr"], "seed": r["seed"], "node": n["node"],
                      "final_test_acc": n["final_test_acc"], "final_val_acc": n["final_val_acc"],
                      "final_val_loss": n["final_val_loss"],
                      "final_test_loss": n["final_test_loss"], "final_train_loss": n["final_train_loss"],
                      "epochs": r["epochs"], "steps": r["steps"]} for r in records for n in r["nodes"]]
        tables.write_csv(out / "noniid.csv", rows)
        tables.write_csv(out / "nodes.csv", node_rows)
        text = markdown(rows, settings, seeds, tuning)
        atomic_write_text(out / "noniid.md", text)
        atomic_write_json(out / "noniid.json", {
            "experiment": "noniid", "machine": tables.machine_description(),
            "settings": {**settings.__dict__, "seeds": seeds, "methods": methods, "lrs": lrs},
            "rows": rows, "tuning": tuning, "runs": records, "failed": failed,
            "seconds": time.perf_counter() - started})
        written = [out / "noniid.md", out / "noniid.csv", out / "nodes.csv", out / "noniid.json"]
        plots = (lambda: plot(records, methods, settings, out)) if records and not args.no_plots else None
        return tables.conclude(text, written, plots, failed)
