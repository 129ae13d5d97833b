"""``python -m topology``: print peer maps, or simulate consensus and report the spectral gap.

    python -m topology peers --schedule crossover --n 8 --segments 3 --rounds 2 --seed 0
    python -m topology simulate --schedule exponential --k 1 --n 4096 --rounds 50 \\
        [--json out.json] [--plot out.png]
    python -m topology peers --schedule graph --graph torus --n 12      (or --edge-file edges.txt)
    python -m topology nodes --graph ring --n 5 --round 2 [--node-list nl.json --hosts hosts.json]
    python -m topology nodes --check node_list.json [--hosts hosts.json]

Bad input prints one line ``python -m topology <cmd>: error: ...`` on stderr and exits with 2.
"""

from __future__ import annotations

import argparse
import difflib
import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
from typing import Sequence

import numpy as np

from .coloring import edge_colouring, num_colours
from .crossover import CrossoverSchedule
from .exponential import RotatingGraph
from .graph import GRAPH_KINDS, Graph
from .hierarchy import HierarchicalSchedule
from .nodes import NodeListError, generated_nodes, json_bytes, load_node_list
from .registry import SCHEDULES, Schedule, make_schedule
from .simulate import SimulationResult, check_memory, random_initial_values, simulate
from .spectral import GAP_METHODS, GapEstimate, mean_square_rate

__all__ = ["main", "build_parser"]


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but errors are a single ``prog: error: message`` line (exit code 2); an unknown
    flag gets the closest known one as a suggestion."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}{self._suggestion(message)}\n")

    def _suggestion(self, message: str) -> str:
        if not message.startswith("unrecognized arguments:"):
            return ""
        known = sorted({o for p in (self, *_subparsers(self)) for a in p._actions for o in a.option_strings})
        for token in message.split(":", 1)[1].split():
            close = difflib.get_close_matches(token.split("=", 1)[0], known, n=1, cutoff=0.75)
            if token.startswith("--") and close:
                return f" (did you mean {close[0]}?)"
        return ""


def _subparsers(parser: argparse.ArgumentParser) -> list:
    return [sub for a in parser._actions if isinstance(a, argparse._SubParsersAction) for sub in a.choices.values()]


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer ({what} must be >= {minimum})")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is invalid: {what} must be >= {minimum}")
        return value

    return parse


def _byte_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: need one or more sizes >= 0, comma-separated")
    return values


def _add_schedule_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schedule", required=True, choices=SCHEDULES, help="topology to use")
    p.add_argument("--n", required=True, type=_int_at_least(1, "n (number of ranks)"), help="ranks")
    p.add_argument("--segments", type=_int_at_least(1, "segments"), default=1,
                   help="segments per model (crossover, hierarchical)")
    p.add_argument("--seed", type=_int_at_least(0, "seed"), default=0, help="shared topology seed")
    p.add_argument("--fair", action=argparse.BooleanOptionalAction, default=True,
                   help="load-balanced derangements (--no-fair: the 'no fairness' ablation)")
    p.add_argument("--segmented", action=argparse.BooleanOptionalAction, default=True,
                   help="one map per segment (--no-segmented: one map per round)")
    p.add_argument("--k", type=_int_at_least(1, "k (peers per round)"), default=None,
                   help="peers per round (exponential, sgp-npeer, bipartite-exponential; default 1); "
                        "degree of --graph regular, expected degree of --graph erdos-renyi")
    p.add_argument("--graph", choices=GRAPH_KINDS, default=None,
                   help="graph schedule: the static graph on n ranks (random ones drawn from --seed)")
    p.add_argument("--edge-file", metavar="PATH", default=None,
                   help="graph schedule: read the graph from an edge list ('i j' per line, # comments)")
    p.add_argument("--bidirectional", action="store_true",
                   help="exponential: SGP code's +1,-1,+2,-2,... phone book")
    p.add_argument("--local-size", type=_int_at_least(1, "local-size"), default=None,
                   help="hierarchical: ranks per node")
    p.add_argument("--groupnum", type=_int_at_least(1, "groupnum"), default=None,
                   help="hierarchical: number of nodes (n / local size)")
    p.add_argument("--segment-bytes", type=_byte_list, default=None,
                   help="hierarchical: comma-separated segment sizes for the local-rank split")
    p.add_argument("--start-round", type=_int_at_least(0, "start-round"), default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m topology", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{peers,simulate,nodes}")
    peers = sub.add_parser("peers", help="print the peer maps of some rounds")
    _add_schedule_options(peers)
    peers.set_defaults(command_parser=peers)
    peers.add_argument("--rounds", type=_int_at_least(1, "rounds"), default=1)
    sim = sub.add_parser("simulate", help="simulate consensus on virtual replicas")
    _add_schedule_options(sim)
    sim.set_defaults(command_parser=sim)
    sim.add_argument("--rounds", type=_int_at_least(0, "rounds"), default=50)
    sim.add_argument("--dim", type=_int_at_least(1, "dim"), default=None,
                     help="values per replica (default max(8, segments))")
    sim.add_argument("--init-seed", type=_int_at_least(0, "init-seed"), default=0,
                     help="seed of the random initial values")
    sim.add_argument("--gap-method", choices=GAP_METHODS, default="auto",
                     help="how to compute the spectral gap (auto: exact where possible)")
    sim.add_argument("--json", metavar="PATH", default=None, help="write the results as JSON")
    sim.add_argument("--plot", metavar="PATH", default=None, help="write a consensus-error plot")
    _add_nodes_parser(sub)
    return parser


def _add_nodes_parser(sub) -> None:
    nodes = sub.add_parser("nodes", help="generate or check a peer-to-peer node graph (node_list.json, hosts.json)")
    nodes.set_defaults(command_parser=nodes)
    source = nodes.add_mutually_exclusive_group(required=True)
    source.add_argument("--graph", choices=GRAPH_KINDS, help="generate this graph on --n nodes node0..node{n-1}")
    source.add_argument("--check", metavar="NODE_LIST", help="validate this node_list.json and print it")
    nodes.add_argument("--n", type=_int_at_least(1, "n (number of nodes)"), default=None, help="nodes (--graph)")
    nodes.add_argument("--round", type=_int_at_least(1, "round (steps per round)"), default=None,
                       help="steps per round K (--graph; default 1); slot = edge colour %% K")
    nodes.add_argument("--degree", type=_int_at_least(1, "degree"), default=None,
                       help="degree of --graph regular, expected degree of --graph erdos-renyi")
    nodes.add_argument("--seed", type=_int_at_least(0, "seed"), default=None,
                       help="seed of a random --graph (default 0)")
    nodes.add_argument("--node-list", metavar="PATH", default=None, help="--graph: write node_list.json here")
    nodes.add_argument("--hosts", metavar="PATH", default=None,
                       help="--graph: write hosts.json here; --check: the hosts.json to check with the node list")
    nodes.add_argument("--address", default=None, help="--graph --hosts: every node's address (default 127.0.0.1)")
    nodes.add_argument("--port", type=_int_at_least(1, "port"), default=None,
                       help="--graph --hosts: node i gets port + i (default: no ports)")
    nodes.add_argument("--symmetric-slots", action="store_true",
                       help="--check: reject an edge whose two ends list different slots")


def _schedule_from_args(args: argparse.Namespace) -> Schedule:
    return make_schedule(
        args.schedule, args.n, segments=args.segments, seed=args.seed, fair=args.fair,
        segmented=args.segmented, k=args.k, bidirectional=args.bidirectional,
        local_size=args.local_size, groupnum=args.groupnum, segment_bytes=args.segment_bytes,
        graph=args.graph, edge_file=args.edge_file,
    )


def _print_peers(schedule: Schedule, start: int, rounds: int) -> None:
    print(f"# {schedule.describe()}")
    if schedule.n == 1:
        print("# n = 1: no peers; a map entry equal to the rank itself means no communication")
    for t in range(start, start + rounds):
        print(f"round {t}")
        if isinstance(schedule, CrossoverSchedule):
            pm = schedule.peers(t)
            for s in range(pm.num_segments):
                print(f"  segment {s}: recv_from {pm.recv_from[s].tolist()}")
                if pm.is_load_balanced:
                    print(f"  segment {s}: send_to   {pm.send_to[s].tolist()}")
                else:
                    print(f"  segment {s}: sends     {pm.send_lists(s)}")
        elif isinstance(schedule, HierarchicalSchedule):
            node_map = schedule.node_peers(t)
            for s in range(node_map.num_segments):
                print(f"  segment {s} (local rank {schedule.owner_of_segment[s]}): "
                      f"node recv_from {node_map.recv_from[s].tolist()}")
            layout = schedule.layout
            for rank, transfers in enumerate(schedule.inter_node_plan(t)):
                items = ", ".join(
                    f"(segment {tr.segment}, send_to {list(tr.send_to)}, recv_from {tr.recv_from})"
                    for tr in transfers
                )
                print(f"  rank {rank} (node {layout.node_of(rank)}, local {layout.local_rank(rank)}): "
                      f"{items or '-'}")
        elif isinstance(schedule, Graph):
            for rank in range(schedule.n):
                print(f"  rank {rank}: neighbours {list(schedule.neighbours(rank))}")
        else:
            assert isinstance(schedule, RotatingGraph)
            print(f"  offsets {list(schedule.offsets_at(t))}")
            for rank in range(schedule.n):
                print(f"  rank {rank}: out {schedule.out_peers(rank, t)} in {schedule.in_peers(rank, t)}")


def _plot(path: str, schedule: Schedule, result: SimulationResult, estimate: GapEstimate) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = np.arange(result.rounds + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.semilogy(rounds, np.maximum(result.errors, 1e-300), marker="o", ms=3, label="simulated consensus error")
    ax.semilogy(rounds, np.maximum(estimate.rate ** rounds, 1e-300), ls="--",
                label=f"rate^t, rate = 1 - gap = {estimate.rate:.4g} ({estimate.method})")
    ax.set_title(f"Consensus of {schedule.n} replicas: {schedule.describe()}", fontsize=9)
    ax.set_xlabel("round (gossip steps)")
    ax.set_ylabel("consensus error (relative mean squared distance to average, dimensionless)", fontsize=8)
    ax.set_ylim(bottom=max(1e-17, float(np.min(result.errors[result.errors > 0], initial=1.0)) / 10))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- output paths
# The user's --json and --plot paths are probed before simulating (a read-only or full filesystem,
# a path under /proc, a directory in the way: one line, exit 2, nothing left behind) and written
# atomically (a temporary file beside the path, renamed over it; removed if the write fails).
# The same rules and wording as crossover_sgd.atomic, which this standalone package cannot import.
_PROBE_PREFIX = ".topology-probe-"


def _path_message(flag: str, path: str, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    reason = reason[:1].lower() + reason[1:]
    full = exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
    advice = "free space on that filesystem or choose another one" if full else "choose a writable file path"
    if getattr(exc, "says_all", False):
        return f"{flag} {path}: {reason}: {advice}"
    return f"{flag} {path}: cannot {'write' if os.path.exists(path) else 'create'} it ({reason}): {advice}"


def _probe_output(path: str) -> None:
    """Raise the OSError that writing the file ``path`` would meet; leave nothing behind."""
    if os.path.isdir(path):
        exc = IsADirectoryError(errno.EISDIR, "is a directory", path)
        exc.says_all = True
        raise exc
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        exc = NotADirectoryError(errno.ENOTDIR, f"{parent} is not a directory", parent)
        exc.says_all = True
        raise exc
    tmpfile = getattr(os, "O_TMPFILE", None)  # a file without a name: the directory is not even modified
    if tmpfile is not None:
        try:
            fd = os.open(parent, tmpfile | os.O_WRONLY, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL):
                raise
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"\0")
                handle.flush()
                os.fsync(handle.fileno())
            return
    times = os.stat(parent)
    made = tempfile.mkdtemp(prefix=_PROBE_PREFIX, dir=parent)
    try:
        fd, name = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=made)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"\0")
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(made)
        with contextlib.suppress(OSError):  # no trace, not even a newer modification time
            os.utime(parent, ns=(times.st_atime_ns, times.st_mtime_ns))


def _check_outputs(args: argparse.Namespace, *outputs: tuple[str, str | None]) -> None:
    for flag, path in outputs:
        if path:
            try:
                _probe_output(path)
            except OSError as exc:
                args.command_parser.error(_path_message(flag, path, exc))


def _write_output(args: argparse.Namespace, flag: str, path: str, write) -> None:
    """``write(handle)`` into a temporary file beside ``path``, renamed over it; a failed write is
    one line naming ``flag`` and leaves nothing behind (no temporary file, no directory it made)."""
    parent = os.path.dirname(os.path.abspath(path))
    created, above = None, parent
    while not os.path.lexists(above):  # the topmost directory makedirs creates (removed on failure)
        created, above = above, os.path.dirname(above)
    tmp = None
    try:
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        args.command_parser.error(_path_message(flag, path, exc))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _simulate(schedule: Schedule, args: argparse.Namespace) -> None:
    # before the simulation: it may take long, its results would be lost
    _check_outputs(args, ("--json", args.json), ("--plot", args.plot))
    dim = args.dim if args.dim is not None else max(8, args.segments)
    try:
        estimate = mean_square_rate(schedule, method=args.gap_method)
    except ValueError as exc:
        args.command_parser.error(str(exc))
    x0 = random_initial_values(schedule.n, dim, args.init_seed)
    result = simulate(schedule, x0, args.rounds, start_round=args.start_round)
    print(f"# {schedule.describe()}; {schedule.n} replicas x {dim} values, rounds "
          f"{args.start_round}..{args.start_round + args.rounds - 1}, init seed {args.init_seed}")
    print(f"{'round':>5}  {'consensus_error':>15}  {'mean_drift':>12}")
    for t, (err, drift) in enumerate(zip(result.errors, result.drift)):
        print(f"{t:>5}  {err:>15.6e}  {drift:>12.4e}")
    print(f"spectral gap (mean-square, per round): {estimate.gap:.6f} "
          f"(rate {estimate.rate:.6f}, {estimate.method})")
    print(f"empirical rate (geometric mean per round): {result.empirical_rate():.6f}")
    if args.json:
        payload = {
            "schedule": args.schedule,
            "description": schedule.describe(),
            "n": schedule.n,
            "dim": dim,
            "start_round": args.start_round,
            "rounds": args.rounds,
            "consensus_error": result.errors.tolist(),
            "mean_drift": result.drift.tolist(),
            "spectral_gap": estimate.gap,
            "mean_square_rate": estimate.rate,
            "gap_method": estimate.method,
            "empirical_rate": result.empirical_rate() if args.rounds else None,
        }
        _write_output(args, "--json", args.json, lambda fh: fh.write(json.dumps(payload, indent=2).encode("utf-8")))
    if args.plot:
        try:
            _plot(args.plot, schedule, result, estimate)
        except OSError as exc:
            args.command_parser.error(_path_message("--plot", args.plot, exc))


def _nodes(args: argparse.Namespace) -> None:
    error = args.command_parser.error
    generate_only = (("--n", args.n), ("--round", args.round), ("--degree", args.degree), ("--seed", args.seed),
                     ("--node-list", args.node_list), ("--address", args.address), ("--port", args.port))
    if args.check:
        given = [flag for flag, value in generate_only if value is not None]
        if given:
            error(f"{given[0]} applies to --graph only: --check reads the graph from {args.check}")
        try:
            node_graph = load_node_list(args.check, args.hosts, symmetric_slots=args.symmetric_slots)
        except NodeListError as exc:
            error(str(exc))
        print(node_graph.describe())
        return
    if args.symmetric_slots:
        error("--symmetric-slots applies to --check only (generated slots are the same at both ends)")
    if args.n is None:
        error(f"--graph {args.graph} needs --n (the number of nodes)")
    random_kind = args.graph in ("regular", "erdos-renyi")
    if random_kind != (args.degree is not None):
        error(f"--graph {args.graph} needs --degree" if random_kind
              else "--degree applies to --graph regular and erdos-renyi only")
    if (args.address is not None or args.port is not None) and not args.hosts:
        error(f"{'--address' if args.address is not None else '--port'} applies to the --hosts file: give --hosts PATH")
    if args.node_list and args.hosts and os.path.realpath(args.node_list) == os.path.realpath(args.hosts):
        error(f"--node-list and --hosts are the same file {args.hosts}: give two paths")
    try:
        node_graph = generated_nodes(args.graph, args.n, args.round or 1, k=args.degree, seed=args.seed or 0)
        hosts = node_graph.to_hosts(args.address or "127.0.0.1", args.port) if args.hosts else None
    except ValueError as exc:
        error(str(exc))
    _check_outputs(args, ("--node-list", args.node_list), ("--hosts", args.hosts))
    print(node_graph.describe())
    colours = num_colours(edge_colouring(node_graph.graph))
    print(f"# slot = edge colour % {node_graph.round}; {colours} colour(s): round >= {colours} gives each node "
          f"at most one exchange per step")
    if args.node_list:
        data = json_bytes(node_graph.to_node_list())
        _write_output(args, "--node-list", args.node_list, lambda fh: fh.write(data))
    if hosts is not None:
        _write_output(args, "--hosts", args.hosts, lambda fh: fh.write(json_bytes(hosts)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "nodes":
        _nodes(args)
        return 0
    try:
        if args.command == "simulate":  # before the schedule (its peer maps are O(N) per segment too)
            check_memory(args.n, args.dim if args.dim is not None else max(8, args.segments), args.segments)
        schedule = _schedule_from_args(args)
    except (ValueError, TypeError, OSError, MemoryError) as exc:  # OSError: an unreadable --edge-file
        args.command_parser.error(str(exc))
    if args.command == "peers":
        _print_peers(schedule, args.start_round, args.rounds)
    else:
        _simulate(schedule, args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
