"""``crossover-sgd experiment mixing``: how fast each topology mixes, from 16 to 4096 replicas.

For every schedule and every number of replicas ``N``, the consensus simulator of
:mod:`topology.simulate` applies ``R`` rounds to ``N`` random replicas (one column block per
segment, so a crossover round mixes every segment with its own derangement), and
:func:`topology.spectral.mean_square_rate` gives the spectral gap (the per-round mean-square
contraction ``1 - rho``: exact, by closed form or Fourier analysis). Reported per (schedule, N):
the consensus error after ``R`` rounds (relative mean squared distance to the average), the
rounds needed to reach ``--tolerance``, the empirical rate and the gap.

Outputs in ``--out``: ``mixing.md``, ``mixing.csv``, ``mixing.json`` (with every error curve),
``mixing_error_vs_rounds.png`` (at the largest N) and ``mixing_gap_vs_n.png``.
"""

from __future__ import annotations

import argparse
import math
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from crossover_sgd.atomic import atomic_write_json, atomic_write_text, user_output
from crossover_sgd.errors import ConfigError
from crossover_sgd.experiments import tables

__all__ = ["TOPOLOGIES", "DEFAULT_TOPOLOGIES", "MixingResult", "simulate_topology", "run_mixing", "configure"]

log = logging.getLogger(__name__)

#: Consensus errors below this are exact consensus up to rounding (float64 of values ~1: ~1e-32).
EXACT = 1e-28
#: Where the plot draws errors below :data:`EXACT` (keeps the interesting range readable).
PLOT_FLOOR = 1e-20


@dataclass(frozen=True)
class Topology:
    """A named schedule of :mod:`topology.registry` and the smallest ``N`` it applies to."""

    name: str
    description: str
    schedule: str
    options: Dict[str, Any] = field(default_factory=dict)
    segmented: bool = False  # takes --segments
    local_size: int = 1

    def applies(self, n: int) -> Optional[str]:
        """Why this topology cannot run on ``n`` replicas (None if it can)."""
        if self.local_size > 1 and (n % self.local_size or n // self.local_size < 2):
            return f"needs 2 or more nodes of {self.local_size}"
        if self.schedule == "exponential":
            from topology import num_powers_of_two_below

            if self.options.get("k", 1) > num_powers_of_two_below(n):
                return "too few distinct peers"
        if self.schedule == "sgp-npeer" and self.options.get("k", 1) >= n:
            return "k must be below N"
        return None

    def build(self, n: int, segments: int, seed: int):
        from topology import make_schedule

        options = dict(self.options)
        if self.segmented:
            options["segments"] = segments
        if self.local_size > 1:
            options["local_size"] = self.local_size
        return make_schedule(self.schedule, n, seed=seed, **options)


TOPOLOGIES: Dict[str, Topology] = {t.name: t for t in (
    Topology("ring", "directed ring: send half to rank i+1 every round", "ring"),
    Topology("exponential-1", "SGP exponential graph, 1 peer per round", "exponential", {"k": 1}),
    Topology("exponential-2", "SGP's 2-peer graph (offsets j*3^i, as --sgp-peers 2)", "sgp-npeer", {"k": 2}),
    Topology("crossover", "Crossover-SGD: a derangement per segment per round", "crossover", segmented=True),
    Topology("hierarchical-4", "hierarchical crossover, 4 ranks per node", "hierarchical", segmented=True,
             local_size=4),
    Topology("hierarchical-8", "hierarchical crossover, 8 ranks per node", "hierarchical", segmented=True,
             local_size=8),
    Topology("crossover-no-fair", "crossover, 'no fairness' ablation", "crossover", {"fair": False}, segmented=True),
    Topology("crossover-no-seg", "crossover, 'no segmentation' ablation", "crossover", {"segmented": False},
             segmented=True),
)}
DEFAULT_TOPOLOGIES = ("ring", "exponential-1", "exponential-2", "crossover", "hierarchical-4", "hierarchical-8")


@dataclass
class MixingResult:
    topology: str
    n: int
    errors: List[float]
    gap: float
    rate: float
    gap_method: str
    empirical_rate: float
    seconds: float

    def rounds_to(self, tolerance: float) -> Optional[int]:
        """First round whose consensus error is at most ``tolerance`` (None: not within the run)."""
        return next((t for t, e in enumerate(self.errors) if e <= tolerance), None)


def simulate_topology(topology: Topology, n: int, rounds: int, segments: int, seed: int = 0,
                      init_seed: int = 0) -> MixingResult:
    """Simulate ``rounds`` rounds of ``topology`` on ``n`` random replicas; compute its gap."""
    from topology import mean_square_rate, random_initial_values, simulate

    started = time.perf_counter()
    schedule = topology.build(n, segments, seed)
    dim = 2 * segments if topology.segmented else max(8, 2 * segments)
    result = simulate(schedule, random_initial_values(n, dim, init_seed), rounds)
    estimate = mean_square_rate(schedule)
    return MixingResult(topology.name, n, [float(e) for e in result.errors], float(estimate.gap), float(estimate.rate),
                        estimate.method, float(result.empirical_rate()) if rounds else float("nan"),
                        time.perf_counter() - started)


def run_mixing(sizes: Sequence[int], names: Sequence[str], rounds: int, segments: int, seed: int = 0,
               progress: Callable[[str], None] = log.info) -> List[MixingResult]:
    """Every (topology, N) that applies, smallest N first."""
    results = []
    for n in sizes:
        for name in names:
            topology = TOPOLOGIES[name]
            reason = topology.applies(n)
            if reason is not None:
                progress(f"N={n} {name}: skipped ({reason})")
                continue
            result = simulate_topology(topology, n, rounds, segments, seed)
            progress(f"N={n} {name}: gap {result.gap:.4g}, error after {rounds} rounds {result.errors[-1]:.3g} "
                     f"({result.seconds:.2f} s)")
            results.append(result)
    return results


# ------------------------------------------------------------------------------------------ outputs
def _rows(results: List[MixingResult], tolerance: float) -> List[Dict[str, Any]]:
    return [{"topology": r.topology, "n": r.n, "rounds": len(r.errors) - 1, "spectral_gap": r.gap,
             "mean_square_rate": r.rate, "gap_method": r.gap_method, "final_error": r.errors[-1],
             "empirical_rate": r.empirical_rate, f"rounds_to_{tolerance:g}": r.rounds_to(tolerance)}
            for r in results]


def markdown(results: List[MixingResult], names: Sequence[str], sizes: Sequence[int], rounds: int,
             tolerance: float, segments: int) -> str:
    by = {(r.topology, r.n): r for r in results}
    header = ["topology"] + [f"N = {n}" for n in sizes]

    def table(cell: Callable[[MixingResult], str]) -> str:
        rows = [[name] + [cell(by[(name, n)]) if (name, n) in by else "n/a" for n in sizes] for name in names]
        return tables.markdown_table(header, rows)

    described = "\n".join(f"- `{name}`: {TOPOLOGIES[name].description}" for name in names)
    return "\n\n".join([
        f"# Mixing at scale\n\nTopologies ({segments} segments where the topology has segments):\n\n{described}",
        f"## Consensus error after {rounds} rounds\n\n(relative mean squared distance of the replicas to their "
        f"average; 1 at round 0; below {EXACT:g}: exact consensus up to rounding)\n\n"
        + table(lambda r: tables.fmt_sci(r.errors[-1])),
        f"## Rounds to a consensus error of {tolerance:g}\n\n(`>{rounds}`: not reached within the run)\n\n"
        + table(lambda r: str(r.rounds_to(tolerance)) if r.rounds_to(tolerance) is not None else f">{rounds}"),
        "## Spectral gap (per-round mean-square contraction 1 - rho)\n\n" + table(lambda r: f"{r.gap:.4g}"),
    ]) + "\n"


def plot(results: List[MixingResult], names: Sequence[str], out: Path, plot_n: int) -> List[Path]:
    from crossover_sgd.plotting import pyplot, save_figure

    plt = pyplot()
    written = []
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for index, name in enumerate(names):
        for r in results:
            if r.topology == name and r.n == plot_n:
                ax.semilogy(range(len(r.errors)), [PLOT_FLOOR if e < EXACT else e for e in r.errors], marker="o",
                            ms=2.5, color=f"C{index}", label=f"{name} (gap {r.gap:.3g})")
    ax.set_title(f"Consensus error vs rounds, N = {plot_n} replicas (drawn at {PLOT_FLOOR:g}: exact consensus)",
                 fontsize=9)
    ax.set_xlabel("round (gossip steps)")
    ax.set_ylabel("consensus error (relative mean squared distance to the average)", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    written.append(save_figure(fig, out / "mixing_error_vs_rounds.png"))

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for index, name in enumerate(names):
        points = sorted((r.n, r.gap) for r in results if r.topology == name)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=f"C{index}", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title("Spectral gap (per-round mean-square contraction 1 - rho) vs number of replicas", fontsize=9)
    ax.set_xlabel("replicas N (log2 scale)")
    ax.set_ylabel("spectral gap 1 - rho (dimensionless)", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    written.append(save_figure(fig, out / "mixing_gap_vs_n.png"))
    return written


# ------------------------------------------------------------------------------------------ command line
def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024, 4096],
                        help="numbers of replicas N")
    parser.add_argument("--topologies", nargs="+", default=list(DEFAULT_TOPOLOGIES), choices=sorted(TOPOLOGIES),
                        help="schedules to compare")
    parser.add_argument("--rounds", type=int, default=30, help="gossip rounds simulated")
    parser.add_argument("--segments", type=int, default=18,
                        help="segments of the crossover schedules (18: ResNet-50's fine chromosome)")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="consensus error the rounds-to column counts to")
    parser.add_argument("--seed", type=int, default=0, help="topology seed")
    parser.add_argument("--out", default="runs/experiments/mixing", help="output directory")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    parser.add_argument("--quick", action="store_true", help="N = 16 and 32, 10 rounds (for tests)")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.sizes, args.rounds = [16, 32], 10
    if any(n < 2 for n in args.sizes):
        raise ConfigError("--sizes: every N must be >= 2")
    for flag, value in (("--rounds", args.rounds), ("--segments", args.segments)):
        if value < 1:
            raise ConfigError(f"{flag} {value} is invalid: use an integer >= 1")
    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise ConfigError(f"--tolerance {args.tolerance} is invalid: use a finite number > 0")
    sizes = sorted(set(args.sizes))
    out = Path(args.out)
    # probed first (read-only, full, /proc, a file in the way); a failed write: one line naming
    # --out, and what this run created is removed again (also when no topology applies)
    with user_output("--out", out, clean_on=(OSError, ConfigError)):
        started = time.perf_counter()
        results = run_mixing(sizes, args.topologies, args.rounds, args.segments, args.seed)
        if not results:
            raise ConfigError("no topology applies to the given --sizes")
        rows = _rows(results, args.tolerance)
        tables.write_csv(out / "mixing.csv", rows)
        atomic_write_text(out / "mixing.md", markdown(results, args.topologies, sizes, args.rounds, args.tolerance,
                                                      args.segments))
        payload = {"experiment": "mixing", "machine": tables.machine_description(),
                   "settings": {"sizes": sizes, "topologies": list(args.topologies), "rounds": args.rounds,
                                "segments": args.segments, "tolerance": args.tolerance, "seed": args.seed},
                   "rows": rows, "errors": {f"{r.topology}/{r.n}": r.errors for r in results},
                   "seconds": time.perf_counter() - started}
        atomic_write_json(out / "mixing.json", payload)
        written = [out / "mixing.md", out / "mixing.csv", out / "mixing.json"]
        if not args.no_plots:
            try:
                written += plot(results, args.topologies, out, max(r.n for r in results))
            except ConfigError as exc:  # matplotlib is optional: the tables stand on their own
                log.warning("no plots: %s", exc)
        print(markdown(results, args.topologies, sizes, args.rounds, args.tolerance, args.segments))
        for path in written:
            print(path)
        return 0
