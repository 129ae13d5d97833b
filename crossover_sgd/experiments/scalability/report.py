"""The scalability experiment's Markdown report and plots."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from crossover_sgd.experiments import stats, tables
from crossover_sgd.experiments.scalability.plan import Design, Settings, Variant, lr_text

__all__ = ["markdown", "plot"]

Chosen = Mapping[Tuple[str, int, int], Dict[str, Any]]


def _cell(row: Optional[Mapping[str, Any]]) -> str:
    """``mean ± std (consensus distance)`` of a chosen row, ``n/a`` without one."""
    if row is None:
        return "n/a"
    acc = tables.fmt_pct({"mean": row["consensus_acc_mean"], "std": row["consensus_acc_std"], "count": row["seeds"]})
    distance = row["final_consensus_distance"]
    return f"{acc} ({'0' if distance == 0 else tables.fmt_sci(distance, 1)})"


def _sweep_title(design: Design) -> str:
    if design.global_batch is not None:
        return (f"## Accuracy vs processes at a fixed global batch of {design.global_batch} "
                f"(per-rank batch {design.global_batch} / n)")
    return f"## Accuracy vs processes at a per-rank batch of {design.batch_size} (the global batch grows with them)"


def _points(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:+.2f}"


def _interval(interval: Sequence[float]) -> str:
    low, high = interval
    if low != low or abs(low) == float("inf"):
        return "-"
    return f"[{100 * low:+.2f}, {100 * high:+.2f}]"


def claims_table(results: Sequence[Mapping[str, Any]]) -> str:
    rows = [[r["claim"], r["study"], _points(r["mean"]), _interval(r["t_interval"]), _interval(r["bootstrap_interval"]),
             r["pairs"], f"**{r['verdict']}**"] for r in results]
    return tables.markdown_table(["claim (study's side: > 0)", "study (ResNet-50 / ImageNet, top-1 %)",
                                  "here: mean difference (points)", "95 % paired t interval",
                                  "95 % bootstrap interval", "seeds", "verdict"], rows)


def _lr_table(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    cells: Dict[str, List[Mapping[str, Any]]] = {}
    for row in rows:
        cells.setdefault(row["cell"], []).append(row)
    lines = []
    for group in sorted(cells.values(), key=lambda g: (g[0]["world_size"], g[0]["global_batch"],
                                                       names.index(g[0]["variant"]))):
        chosen = next((r for r in group if r.get("chosen")), None)
        tried = ", ".join(f"{lr_text(r['lr'])}: {_pct(r['consensus_acc_mean'])}{'*' if r is chosen else ''}"
                          for r in sorted(group, key=lambda r: r["lr"]))
        source = "grid" if group[0]["lr_from"] is None else f"chosen at {group[0]['lr_from']}"
        lines.append([group[0]["variant"], group[0]["world_size"], group[0]["global_batch"], tried,
                      "-" if chosen is None else f"{lr_text(chosen['lr'])} (x{chosen['lr_scale']:g})", source])
    return tables.markdown_table(["variant", "processes", "global batch", "mean accuracy (%) per lr (*: chosen)",
                                  "chosen lr (x rule)", "from"], lines)


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def markdown(rows: List[Dict[str, Any]], chosen: Chosen, claims: Sequence[Mapping[str, Any]],
             variants: Sequence[Variant], settings: Settings, design: Design, seeds: Sequence[int], rule: str) -> str:
    """The report: the two tables shaped like the study's, the comparisons, the lr grid, the replicas."""
    names = [v.name for v in variants]
    sizes = sorted(design.world_sizes)
    model = settings.model or next((r["model"] for r in rows if r.get("model")), "train's default")
    grid = ", ".join(f"{m:g}" for m in design.lr_grid)
    where = ("every cell" if design.lr_grid_world is None
             else f"{design.lr_grid_world} processes (other world sizes reuse the choice of the same variant and "
                  "global batch there)")
    parts = [
        "# Learning scalability",
        f"Dataset `{settings.dataset}`, model `{model}`, {settings.epochs} epoch(s), "
        f"{settings.lr_schedule} schedule with {settings.warmup_epochs:g} warmup epoch(s); seeds "
        f"{', '.join(map(str, seeds))}"
        + (f"; more `train` flags: `{shlex.join(settings.train_args)}`" if settings.train_args else "") + ". "
        f"Peak learning rate: the rule's ({settings.rule_text()}) times a multiplier of the grid ({grid}), run at "
        f"{where}; each cell reports the lr with the best mean final accuracy over the seeds (picked on the "
        "validation accuracy that is also reported: the pick is biased upward by the seed noise, alike for every "
        "method). Cells: top-1 validation accuracy (%) of the averaged model at the end, mean ± standard deviation "
        "over seeds; in parentheses the final consensus distance `(1/n) sum_i ||x_i - mean||^2` (mean over seeds).",
        "Variants: " + "; ".join(f"`{v.name}`: {v.description}" for v in variants) + ".",
        _sweep_title(design),
        tables.markdown_table(["variant"] + [f"{n} ({design.per_rank(n)}/rank)" for n in sizes],
                              [[v] + [_cell(chosen.get((v, n, n * design.per_rank(n)))) for n in sizes]
                               for v in names]),
    ]
    if design.batch_world is not None and design.batch_sweep:
        n, batches = design.batch_world, sorted(design.batch_sweep)
        swept = [v for v in names if design.batch_variants is None or v in design.batch_variants]
        parts += [f"## Accuracy vs global batch at {n} processes",
                  tables.markdown_table(["variant"] + [f"{b} ({b // n}/rank)" for b in batches],
                                        [[v] + [_cell(chosen.get((v, n, b))) for b in batches] for v in swept])]
    decided = "paired t" if rule == "t" else "bootstrap"
    parts += ["## The study's orderings",
              f"Per-seed differences of final accuracy (runs with the same seed pair up), in points; verdict from "
              f"the 95 % {decided} interval: **reproduces** when it lies above 0 (the study's side), **reverses** "
              "when below, **cannot be told** when it holds 0. The bootstrap (percentile) is exact up to "
              f"{stats.EXACT_BOOTSTRAP_MAX} seeds; with 3 seeds its interval is the range of the 3 differences "
              "(it covers the true mean about 75 % of the time, not 95 %), the t interval keeps its level but is "
              "wide (t = 4.30 with 2 degrees of freedom).",
              claims_table(claims) if claims else
              "No ordering of the study applies: it needs a fixed global batch (`--global-batch`) over 2 or more "
              "world sizes, or a batch sweep of 2 or more global batches."]
    parts += ["## Learning rate: the grid and the choice", _lr_table(rows, names)]
    detail = [[r["variant"], r["world_size"], r["global_batch"], lr_text(r["lr"]), _cell(r), _pct(r["rank_acc_mean"]),
               _pct(r["rank_acc_worst"]), tables.fmt_sci(r["mean_consensus_distance"]),
               "-" if r["process_time_s"] is None else f"{r['process_time_s']:.1f}"]
              for r in sorted(chosen.values(), key=lambda r: (r["world_size"], r["global_batch"],
                                                              names.index(r["variant"])))]
    parts += ["## Replicas and consensus (chosen learning rates)",
              "Averaged model vs the replicas themselves (mean over ranks, and the worst rank over all seeds); "
              "consensus distance averaged over the evaluations; seconds per run (process, mean over seeds).",
              tables.markdown_table(["variant", "processes", "global batch", "lr", "averaged model (%) (distance)",
                                     "replicas, mean (%)", "worst replica (%)", "mean consensus distance",
                                     "seconds per run"], detail)]
    return "\n\n".join(parts) + "\n"


def plot(records: List[Dict[str, Any]], chosen: Chosen, variants: Sequence[Variant], design: Design,
         out: Path) -> List[Path]:
    """Accuracy vs processes, accuracy vs global batch (chosen lrs, error bars: std over seeds),
    consensus distance per epoch at the largest world size."""
    from crossover_sgd.plotting import pyplot, save_figure

    plt = pyplot()
    names = [v.name for v in variants]
    rows = list(chosen.values())
    written = []

    def errorbar_figure(filename: str, select: Callable[[Mapping[str, Any]], bool], x_key: str, xlabel: str,
                        title: str) -> None:
        fig, ax = plt.subplots(figsize=(7.5, 4.6))
        ticks = set()
        for index, name in enumerate(names):
            points = sorted(((r[x_key], r) for r in rows if r["variant"] == name and select(r)), key=lambda p: p[0])
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

    fixed = (f"global batch {design.global_batch}" if design.global_batch is not None
             else f"per-rank batch {design.batch_size}")
    errorbar_figure("scalability_acc_vs_procs.png", lambda r: r["batch_size"] == design.per_rank(r["world_size"]),
                    "world_size", "processes (log2 scale)",
                    f"Accuracy vs processes, {fixed} (chosen lr; mean ± std over seeds)")
    if design.batch_world is not None and design.batch_sweep:
        errorbar_figure("scalability_acc_vs_batch.png",
                        lambda r: r["world_size"] == design.batch_world and r["global_batch"] in design.batch_sweep,
                        "global_batch", "global batch (samples per step, log2 scale)",
                        f"Accuracy vs global batch, {design.batch_world} processes (chosen lr; mean ± std over seeds)")
    written.append(_distance_figure(plt, save_figure, records, chosen, names, design, out))
    return written


def _distance_figure(plt: Any, save_figure: Callable[..., Path], records: List[Dict[str, Any]], chosen: Chosen,
                     names: Sequence[str], design: Design, out: Path) -> Path:
    largest = max(design.world_sizes)
    batch = largest * design.per_rank(largest)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for index, name in enumerate(names):
        row = chosen.get((name, largest, batch))
        series = [r for r in records if row is not None and r["variant"] == name and r["world_size"] == largest
                  and r["global_batch"] == batch and r["lr"] == row["lr"] and r["consensus_distance_series"]]
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
    ax.set_title(f"Consensus distance per epoch, {largest} processes, chosen lr\n"
                 "(mean over seeds, band: min-max; AllReduce: 0, not drawn)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    return save_figure(fig, out / "scalability_consensus_distance.png")
