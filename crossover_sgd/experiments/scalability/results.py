"""The scalability experiment's numbers: one record per run, one row per (cell, lr), the lr choice.

The **lr choice**: in a cell that ran the grid, the row (learning rate) with the best mean final
accuracy of the averaged model over the seeds, among the rows with every seed; ties go to the
multiplier nearest the rule's (1), then to the smaller lr. This is picked on the validation
accuracy the runs report, which is also the reported number (there is no third split): the best
of k grid points is biased upward by the seed noise (winner's curse), for every method alike.
A cell that reuses the choice made at ``lr_grid_world`` processes has one row, chosen.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from crossover_sgd.experiments import tables
from crossover_sgd.experiments.scalability.plan import Cell, RunSpec

__all__ = ["SERIES_KEYS", "collect_run", "aggregate", "choose", "chosen_rows"]

#: Long per-run series: in the JSON, not in the CSVs.
SERIES_KEYS = ("epoch_series", "consensus_distance_series", "rank_accs")


def collect_run(spec: RunSpec, run_dir: Path, lr_from: Optional[Cell]) -> Dict[str, Any]:
    """One finished run as a record: accuracies, consensus distance per epoch, cost; the global
    batch and per-rank batch as the run's ``summary.json`` states them."""
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
        "batch_size": summary["config"]["batch_size"], "global_batch": summary.get("global_batch", spec.global_batch),
        "seed": spec.seed, "lr": spec.lr, "lr_scale": spec.lr_scale, "lr_from": lr_from.key if lr_from else None,
        "model": summary["config"].get("model"), "epochs": summary.get("epochs_done"),
        "steps": summary.get("steps_done"),
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


def _mean(group: List[Dict[str, Any]], key: str, stat: str = "mean") -> Optional[float]:
    return tables.spread(r[key] for r in group)[stat]


def aggregate(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Mean and spread over seeds per (variant, world size, per-rank batch, lr), with every seed's
    accuracy (``seed_accs``, by seed as text: the pairs of the comparisons)."""
    groups: Dict[Tuple[str, int, int, float], List[Dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["variant"], record["world_size"], record["batch_size"], record["lr"]),
                          []).append(record)
    rows = []
    for (variant, n, b, lr), group in groups.items():
        acc = tables.spread(r["consensus_acc"] for r in group)
        rows.append({
            "variant": variant, "world_size": n, "batch_size": b, "global_batch": group[0]["global_batch"],
            "cell": Cell.key_of(variant, n, b), "lr": lr, "lr_scale": group[0]["lr_scale"],
            "lr_from": group[0]["lr_from"], "model": group[0]["model"], "seeds": len(group),
            "consensus_acc_mean": acc["mean"], "consensus_acc_std": acc["std"],
            "consensus_acc_min": acc["min"], "consensus_acc_max": acc["max"],
            "rank_acc_mean": _mean(group, "rank_acc_mean"), "rank_acc_worst": _mean(group, "rank_acc_min", "min"),
            "final_consensus_distance": _mean(group, "final_consensus_distance"),
            "mean_consensus_distance": _mean(group, "mean_consensus_distance"),
            "wall_time_s": _mean(group, "wall_time_s"), "process_time_s": _mean(group, "process_time_s"),
            "bytes_sent_per_step_rank0": group[0]["bytes_sent_per_step_rank0"],
            "seed_accs": {str(r["seed"]): r["consensus_acc"] for r in sorted(group, key=lambda r: r["seed"])},
        })
    return rows


def _preference(row: Dict[str, Any]) -> Tuple[int, float, float, float]:
    mean = row["consensus_acc_mean"]
    return (row["seeds"], -math.inf if mean is None else mean, -abs(math.log(row["lr_scale"])), -row["lr"])


def choose(rows: List[Dict[str, Any]]) -> Dict[str, float]:
    """Mark each cell's chosen row (``chosen``; ``lr_grid``: the multipliers its grid tried) and
    return the chosen multiplier of every cell that ran a grid, by cell key."""
    cells: Dict[str, List[Dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault(row["cell"], []).append(row)
    picks: Dict[str, float] = {}
    for key, group in cells.items():
        complete = max(r["seeds"] for r in group)
        best = max(group, key=lambda r: _preference({**r, "seeds": int(r["seeds"] == complete)}))
        for row in group:
            row["chosen"] = row is best
            row["lr_grid"] = sorted(r["lr_scale"] for r in group)
        if best["lr_from"] is None:
            picks[key] = best["lr_scale"]
    return picks


def chosen_rows(rows: List[Dict[str, Any]]) -> Dict[Tuple[str, int, int], Dict[str, Any]]:
    """The chosen row of every cell, by (variant, world size, global batch)."""
    return {(r["variant"], r["world_size"], r["global_batch"]): r for r in rows if r.get("chosen")}
