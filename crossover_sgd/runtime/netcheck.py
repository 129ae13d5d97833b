"""``crossover-sgd netcheck``: the throughput each node's link actually gets, measured with
torch.distributed (Gloo) send/recv of CPU tensors, against the set rate (docs/emulation.md).

Two phases, each with every node at once:

- ``link`` (two nodes or more): the first rank of node i sends to the first rank of node i+1 (mod
  M) while it receives from node i-1's, so every link carries one stream each way. A node's figure
  is what it received: the rate of its downlink and of node i-1's uplink.
- ``local`` (nodes of two ranks or more; without emulation, loopback): the first two ranks of every
  node exchange the same way, within the node (no shaping there).

A stream is ``--mbytes`` megabytes (default: 2 seconds at the set rate, or 256 MB) sent as
messages of up to :data:`CHUNK` bytes (at least 8). The figure is the payload rate from the median
gap between two arrivals (robust to a rank briefly without a core on a loaded machine); the mean
from the first arrival to the last is reported beside it. Both leave out the connection's start
and the shaper's initial burst. The set rate is the rate of Ethernet frames (headers included,
like a NIC's), so TCP payload reaches about 95 % of it.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from argparse import Namespace
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist

from crossover_sgd.atomic import atomic_write_json, user_output
from crossover_sgd.errors import ConfigError
from crossover_sgd.runtime.emulation import format_rate
from crossover_sgd.runtime.launch import detect_launch
from crossover_sgd.runtime.local_launcher import EMULATED_NODES_ENV, LINK_RATE_ENV
from crossover_sgd.runtime.process_group import init_distributed, shutdown
from crossover_sgd.runtime.report import check_json

__all__ = ["run_netcheck", "check_args", "CHUNK"]

#: The largest message of a stream (bytes).
CHUNK = 4 * 2 ** 20
_DEPTH = 4  # receives posted ahead (Gloo stops reading a pair that has no receive posted)
_MIN_CHUNK = 64 * 1024
_MIN_MESSAGES = 8
_DEFAULT_SECONDS = 2.0
_LOOPBACK_MBYTES = 256.0


def check_args(args: Namespace) -> None:
    """``--mbytes`` (None: the default) and ``--timeout`` must be finite numbers > 0."""
    if args.mbytes is not None and not (math.isfinite(args.mbytes) and args.mbytes > 0):
        raise ConfigError(f"{{mbytes}} {args.mbytes:g} is invalid: use a finite number of megabytes > 0 "
                          "(the size of each measured stream)")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ConfigError(f"{{timeout}} {args.timeout:g} is invalid: use a number of seconds > 0")


def _stream_bytes(mbytes: Optional[float], rate: Optional[int]) -> int:
    """The bytes of one stream: ``mbytes`` megabytes, or 2 seconds at ``rate``, or 256 MB."""
    if mbytes is None:
        mbytes = rate * _DEFAULT_SECONDS / 8 / 1e6 if rate else _LOOPBACK_MBYTES
    return max(_MIN_MESSAGES * _MIN_CHUNK, int(mbytes * 1e6))


def _chunk(total: int) -> int:
    """The message size of a stream of ``total`` bytes: at least :data:`_MIN_MESSAGES` messages."""
    return max(_MIN_CHUNK, min(CHUNK, total // (4 * _MIN_MESSAGES)) // _MIN_CHUNK * _MIN_CHUNK)


def _stream(send_to: int, recv_from: int, total: int) -> Dict[str, float]:
    """Send ``total`` bytes to ``send_to`` while receiving as much from ``recv_from``, as messages;
    the receiving side's payload rate: the median of the messages' (from one arrival to the next,
    robust to a stall of a loaded machine's CPU) and the mean from the first arrival to the last."""
    chunk = _chunk(total)
    count = max(_MIN_MESSAGES, total // chunk)
    out = torch.ones(chunk, dtype=torch.uint8)
    slots = [torch.empty(chunk, dtype=torch.uint8) for _ in range(_DEPTH)]
    sends = [dist.isend(out, send_to) for _ in range(count)]  # queued in order on the pair
    recvs = [dist.irecv(slot, recv_from) for slot in slots[:count]]
    arrivals: List[float] = []
    for k in range(count):
        recvs[k % _DEPTH].wait()
        arrivals.append(time.perf_counter())
        if k + _DEPTH < count:
            recvs[k % _DEPTH] = dist.irecv(slots[k % _DEPTH], recv_from)
    for request in sends:
        request.wait()
    seconds = arrivals[-1] - arrivals[0]
    median = statistics.median(b - a for a, b in zip(arrivals, arrivals[1:]))
    return {"mbytes": (count - 1) * chunk / 1e6, "seconds": seconds, "message_bytes": chunk,
            "measured_mbit_s": chunk * 8 / median / 1e6 if median > 0 else float("inf"),
            "mean_mbit_s": (count - 1) * chunk * 8 / seconds / 1e6 if seconds > 0 else float("inf")}


def _row(phase: str, node: int, rank: int, peer_node: int, peer_rank: int, result: Dict[str, float],
         rate: Optional[int]) -> Dict[str, object]:
    set_mbit = rate / 1e6 if rate and phase == "link" else None
    return {"phase": phase, "node": node, "rank": rank, "from_node": peer_node, "from_rank": peer_rank,
            "mbytes": round(result["mbytes"], 3), "seconds": round(result["seconds"], 4),
            "message_bytes": int(result["message_bytes"]), "measured_mbit_s": round(result["measured_mbit_s"], 1),
            "mean_mbit_s": round(result["mean_mbit_s"], 1), "set_mbit_s": set_mbit,
            "ratio": round(result["measured_mbit_s"] / set_mbit, 4) if set_mbit else None}


def _phase(phase: str, ring: Sequence[int], node_of: Sequence[int], total: int, rate: Optional[int]) -> List[dict]:
    """This rank streams to the next rank of its ``ring`` and from the previous one; every ring
    at once (collective: every rank calls it, ``ring`` empty where this rank takes no part)."""
    dist.barrier()
    rank = dist.get_rank()
    if rank not in ring:
        return []
    i = ring.index(rank)
    nxt, prev = ring[(i + 1) % len(ring)], ring[(i - 1) % len(ring)]
    return [_row(phase, node_of[rank], rank, node_of[prev], prev, _stream(nxt, prev, total), rate)]


def _table(report: Dict[str, object]) -> str:
    lines = [f"{'phase':<6} {'node':>4} {'rank':>4} {'from':>9} {'MB':>8} {'s':>7} {'Mbit/s':>9} {'mean':>9} "
             f"{'set':>7} {'ratio':>6}"]
    for row in report["rows"]:  # type: ignore[union-attr]
        set_mbit = f"{row['set_mbit_s']:g}" if row["set_mbit_s"] else "-"
        ratio = f"{row['ratio']:.3f}" if row["ratio"] is not None else "-"
        source = f"n{row['from_node']}/r{row['from_rank']}"
        lines.append(f"{row['phase']:<6} {row['node']:>4} {row['rank']:>4} {source:>9} {row['mbytes']:>8.1f} "
                     f"{row['seconds']:>7.3f} {row['measured_mbit_s']:>9.1f} {row['mean_mbit_s']:>9.1f} "
                     f"{set_mbit:>7} {ratio:>6}")
    return "\n".join(lines)


def run_netcheck(args: Namespace) -> Dict[str, object]:
    """The rank side of ``crossover-sgd netcheck``: measure, and print (rank 0) the table, then
    one JSON line; also write it to ``--json``."""
    info = detect_launch()
    check_json(args.json, info.rank)
    check_args(args)
    if info.world_size < 2:
        raise ConfigError("netcheck measures between ranks: start 2 or more (e.g. {nproc} 2, or under srun, "
                          "torchrun or mpirun)")
    rate = int(os.environ[LINK_RATE_ENV]) if os.environ.get(LINK_RATE_ENV) else None
    total = _stream_bytes(args.mbytes, rate)
    ctx = init_distributed(info, device=torch.device("cpu"), backend="gloo", timeout_s=args.timeout)
    try:
        node_of = [0] * ctx.world_size
        dist.all_gather_object(node_of, ctx.node_id)
        nodes = sorted(set(node_of))
        members = {node: [r for r, n in enumerate(node_of) if n == node] for node in nodes}
        rows: List[dict] = []
        if len(nodes) >= 2:  # the first rank of every node
            rows += _phase("link", [members[node][0] for node in nodes], node_of, total, rate)
        if any(len(ranks) >= 2 for ranks in members.values()):  # the first two ranks of every node
            local = members[ctx.node_id][:2] if len(members[ctx.node_id]) >= 2 else []
            rows += _phase("local", local, node_of, min(total, int(_LOOPBACK_MBYTES * 1e6)), None)
        gathered: List[List[dict]] = [[] for _ in range(ctx.world_size)]
        dist.all_gather_object(gathered, rows)
        every = sorted((row for part in gathered for row in part), key=lambda r: (r["phase"], r["node"], r["rank"]))
        report: Dict[str, object] = {
            "nproc": ctx.world_size, "nodes": len(nodes),
            "emulated": bool(os.environ.get(EMULATED_NODES_ENV)), "link_rate_bits_per_s": rate,
            "link_rate": format_rate(rate) if rate else None, "mode": "all nodes at once", "rows": every}
        if ctx.is_main:
            print(_table(report), flush=True)
            print(json.dumps(report, sort_keys=True), flush=True)
            if args.json:
                with user_output("--json", args.json, kind="file"):
                    atomic_write_json(args.json, report)
        return report
    finally:
        shutdown()
