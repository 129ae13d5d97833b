"""Communication per round of every algorithm against the raw point-to-point exchange of its bytes.

For each model (torchvision's ResNet-50, 25.6 M fp32 parameters, and the default job's small CNN)
and each world size ``n`` (Gloo processes on this machine, started with the local launcher), the
real algorithm classes (``build_algorithm`` with a ``TrainConfig``) run one optimizer step's
communication (``before_step``, ``after_step``, ``flush``) with no computation:

* ``allreduce-param``: AllReduce-SGD with ``sync_grad False`` (parameter average);
* ``sgp-1peer``, ``sgp-2peers``: SGP (push-sum on the exponential graph);
* ``crossover-coarse``, ``crossover-fine``: Crossover-SGD (ResNet stages / residual blocks);
* ``hierarchical-2``: hierarchical Crossover-SGD with 2 ranks per node (fine segments).

Each case is timed in alternation with the **raw exchange**: every rank ``isend``/``irecv``s one
flat buffer of the model's parameter bytes to/from a random derangement peer, in one message:
the physical limit of moving those bytes between these processes. Reported per case: seconds
per round (median over repeats of the slowest rank), bytes sent per rank (the algorithm's own
count), the ratio to the raw exchange measured beside it, and the seconds the algorithm itself
counts as communication (``CommStats.seconds``: for the gossip algorithms the exchange alone,
for AllReduce the whole average with packing; the rest of a round is local copying and averaging).

Hierarchical Crossover counts all its traffic (the intra-node gradient average and reassembly,
which run over NVLink on a GPU node, and the inter-node crossover); the inter-node part is shown
separately.

On an emulated cluster (``--emulate-nodes M --link-rate RATE``, root only; docs/emulation.md)
every row also gives what the busiest node's link carried per round (``link MB``: frames, headers
included, from the interface's counters) and the payload's time at the set rate (``payload@rate``),
and the goals become the link-bound ones: crossover fine within 1.1x of the raw exchange;
AllReduce's time over crossover fine's against its volume ``2(n-1)/n`` (nodes of one rank); the
hierarchical variant (``hierarchical-2``/``-4``: run on nodes of that many ranks) faster than
crossover fine, its inter-node bytes per node being one model where crossover's are about G.

Usage: ``python3 benchmarks/comm.py [--nprocs 2 4 8] [--models resnet50 small_cnn] [--json out.json]``
(default: 2 and 4 ranks, about 2 minutes on 2 cores);
``python3 benchmarks/comm.py --nprocs 8 --emulate-nodes 4 --link-rate 200mbit --models resnet18``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

log = logging.getLogger("benchmarks.comm")

ALGORITHM_CASES = ("allreduce-param", "sgp-1peer", "sgp-2peers", "crossover-coarse", "crossover-fine",
                   "hierarchical-2")
#: Cases offered beyond the default ones (hierarchical-4: nodes of 4 ranks, 8 ranks or more).
EXTRA_CASES = ("hierarchical-4",)
RAW_TAG = 999  # distinct from every algorithm's tags


class RawExchange:
    """``numel`` fp32 values to a derangement peer and as many from another, per call: in one
    message, or in messages of at most ``message_bytes``, every receive posted before the sends.

    The order matters on Gloo's TCP transport: a send leaves only once the peer has announced the
    matching receive, and that notice is queued on the pair's connection behind whatever the
    announcing rank is itself sending to that peer. Posted after a large send to the same peer, a
    receive holds the peer's data back until that send is done: the two directions of the pair
    take turns (on the emulated cluster, one 25 MB message each way took twice the one-way time).
    ``sends_first`` posts the sends first (as the algorithms' rounds did before they posted receives
    first), to show it."""

    def __init__(self, numel: int, device: torch.device, seed: int = 0, message_bytes: Optional[int] = None,
                 sends_first: bool = False):
        self.send = torch.randn(numel, device=device)
        self.recv = torch.empty_like(self.send)
        self.seed, self.round = seed, 0
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        per_message = numel if not message_bytes else max(1, message_bytes // self.send.element_size())
        self.sends, self.recvs = self.send.split(per_message), self.recv.split(per_message)
        self.sends_first = sends_first

    @property
    def messages(self) -> int:
        return len(self.sends)

    @property
    def nbytes(self) -> int:
        return self.send.numel() * self.send.element_size()

    def __call__(self) -> None:
        if self.world == 1:
            return
        from topology import derangement

        recv_from = derangement(self.world, self.seed, self.round)
        send_to = int(np.argsort(recv_from)[self.rank])
        self.round += 1
        recv_from = int(recv_from[self.rank])
        # receives first (see the class doc); the same peers and tag: delivered in order
        recvs = [lambda recv=recv: dist.irecv(recv, recv_from, tag=RAW_TAG) for recv in self.recvs]
        sends = [lambda send=send: dist.isend(send, send_to, tag=RAW_TAG) for send in self.sends]
        requests = [post() for post in (sends + recvs if self.sends_first else recvs + sends)]
        for request in requests:
            request.wait()


def measure_model(ctx, model_name: str, cases: List[str], args: argparse.Namespace) -> List[Dict[str, Any]]:
    """All rows of one model on this world size (collective)."""
    device, n = ctx.device, ctx.world_size
    model = common.build_bench_model(model_name, device)
    common.give_gradients(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    payload = common.parameter_bytes(model)
    node_size, rate = common.emulated_node_size(), common.emulated_rate()
    message_mb = args.raw_message_mb if args.raw_message_mb is not None else (1.0 if node_size is not None else 0.0)
    raw = RawExchange(payload // 4, device, message_bytes=int(message_mb * 1e6) or None,
                      sends_first=args.raw_sends_first)
    raw_link = common.link_traffic(raw, device, rounds=3) if node_size is not None and n > 1 else None
    rows = []
    for label in cases:
        case = common.CASES[label]
        row: Dict[str, Any] = {"model": model_name, "nproc": n, "case": label, "payload_bytes": payload,
                               "raw_messages": raw.messages, "raw_sends_first": raw.sends_first}
        if node_size is not None:
            row.update(ranks_per_node=node_size, link_rate_bits_per_s=rate, payload_at_rate_s=payload * 8 / rate)
        reason = case.skip_reason(n)
        if reason is not None:
            rows.append({**row, "skipped": reason})
            continue
        if ctx.rank == 0:
            log.info("%s, %d ranks: %s vs raw exchange (%d warmup + %d repeats)", model_name, n, label,
                     args.warmup, args.repeats)
        algorithm = common.make_algorithm(ctx, case)
        algorithm.prepare(model)
        work = common.communication_round(algorithm, optimizer)
        work()  # first round builds the segments and buffers
        sent, recv = common.traffic_per_round(algorithm, work)
        link = common.link_traffic(work, device)  # None unless the ranks are on an emulated cluster
        inter = getattr(algorithm, "inter_comm", None)
        counted_before = algorithm.comm.seconds
        samples = common.interleave({"raw": raw, label: work}, device, args.warmup, args.repeats)
        counted = (algorithm.comm.seconds - counted_before) / (args.warmup + args.repeats)
        counted = common.max_over_ranks([counted], device)[0]
        algo, base = common.summarize(samples[label]), common.summarize(samples["raw"])
        row.update(seconds=algo["median_s"], seconds_min=algo["min_s"], raw_seconds=base["median_s"],
                   raw_seconds_min=base["min_s"], ratio_to_raw=algo["median_s"] / base["median_s"],
                   ratio_to_raw_min=algo["min_s"] / base["min_s"], bytes_sent=sent, bytes_recv=recv,
                   volume_ratio=sent / payload, raw_bytes_sent=raw.nbytes,
                   raw_gbytes_per_s=raw.nbytes / base["median_s"] / 1e9,
                   counted_comm_seconds=counted, samples=samples[label], raw_samples=samples["raw"])
        if node_size is not None:  # how far from the payload's time at the set rate (1 / 0.95: headers)
            row.update(ratio_to_payload_at_rate=algo["median_s"] / row["payload_at_rate_s"],
                       raw_ratio_to_payload_at_rate=base["median_s"] / row["payload_at_rate_s"])
        if inter is not None:
            row["inter_node_bytes_sent"] = inter.bytes_sent / max(inter.rounds, 1)
        if link is not None and raw_link is not None:
            row.update(link, raw_link_bytes_sent=raw_link["link_bytes_sent"],
                       raw_link_bytes_recv=raw_link["link_bytes_recv"])
        rows.append(row)
        del algorithm, work
        gc.collect()
    return rows


def run_rank(args: argparse.Namespace) -> None:
    ctx = common.join_process_group(args.device)
    try:
        rows = []
        for model_name in args.models:
            rows += measure_model(ctx, model_name, args.cases, args)
        common.finish_rank(ctx, args, {"nproc": ctx.world_size, "rows": rows}, report)
    finally:
        common.leave_process_group()


def goals(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The issue's goals, checked per (model, n): crossover fine within 1.15x of the raw exchange
    and of SGP with 1 peer; AllReduce's bytes at 2(n-1)/n of the payload. On an emulated cluster
    (link-bound): crossover fine within 1.1x of the raw exchange; AllReduce's time over crossover
    fine's within 10 % of its volume 2(n-1)/n (nodes of one rank); hierarchical faster than fine."""
    out = []
    layout = lambda r: (r["model"], r["nproc"], r.get("ranks_per_node") or 0)  # noqa: E731 (0: not emulated)
    for key in sorted({layout(r) for r in rows}):
        at = {r["case"]: r for r in rows if layout(r) == key and "seconds" in r}
        fine, sgp, ar = at.get("crossover-fine"), at.get("sgp-1peer"), at.get("allreduce-param")
        model, n, node_size = key
        if node_size:  # an emulated cluster: the link-bound goals
            out += _emulated_goals(model, n, node_size, at)
            continue
        if fine is not None:
            out.append({"model": model, "nproc": n, "goal": "crossover-fine / raw <= 1.15",
                        "value": fine["ratio_to_raw"], "met": fine["ratio_to_raw"] <= 1.15})
            if sgp is not None:  # both normalised by the raw exchange measured beside each
                value = fine["ratio_to_raw"] / sgp["ratio_to_raw"]
                out.append({"model": model, "nproc": n, "goal": "crossover-fine / sgp-1peer <= 1.15",
                            "value": value, "met": value <= 1.15})
        if ar is not None:
            expected = 2 * (n - 1) / n
            out.append({"model": model, "nproc": n, "goal": f"allreduce bytes / payload = 2(n-1)/n = {expected:.3f}",
                        "value": ar["volume_ratio"], "met": abs(ar["volume_ratio"] - expected) < 0.01})
    return out


def _emulated_goals(model: str, n: int, node_size: int, at: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The goals of one (model, n) measured on an emulated cluster of nodes of ``node_size`` ranks."""
    out = []
    where = f" ({n // node_size} nodes x {node_size})"
    fine, ar = at.get("crossover-fine"), at.get("allreduce-param")
    if fine is not None:
        out.append({"model": model, "nproc": n, "goal": "crossover-fine / raw <= 1.1 (link-bound)" + where,
                    "value": fine["ratio_to_raw"], "met": fine["ratio_to_raw"] <= 1.1})
        if ar is not None and node_size == 1:
            expected = 2 * (n - 1) / n
            value = ar["seconds"] / fine["seconds"]
            out.append({"model": model, "nproc": n,
                        "goal": f"allreduce / crossover-fine ~ 2(n-1)/n = {expected:.3f} (within 10 %)" + where,
                        "value": value, "met": abs(value / expected - 1) <= 0.1})
        for label in ("hierarchical-2", "hierarchical-4"):
            hier = at.get(label)
            if hier is not None:
                value = hier["seconds"] / fine["seconds"]
                out.append({"model": model, "nproc": n, "goal": f"{label} / crossover-fine < 1 (faster)" + where,
                            "value": value, "met": value < 1})
    return out


def report(parts: List[Dict[str, Any]], args: argparse.Namespace) -> Dict[str, Any]:
    """Print the table and the goals; write ``--json``."""
    rows = [row for part in parts for row in part["rows"]]
    result = {"benchmark": "comm", "machine": common.machine_info(args.device),
              "settings": {"nprocs": [p["nproc"] for p in parts], "models": args.models, "cases": args.cases,
                           "warmup": args.warmup, "repeats": args.repeats, "threads_per_rank": 1},
              "rows": rows, "goals": goals(rows)}
    columns = [common.Column("model", "model"), common.Column("nproc", "n"), common.Column("case", "case"),
               common.Column("bytes_sent", "MB sent/rank", "{:.3f}", ),
               common.Column("volume_ratio", "x payload", "{:.3f}"),
               common.Column("inter", "inter-node MB", "{:.3f}"),
               common.Column("link", "link MB", "{:.2f}"), common.Column("raw_link", "raw link MB", "{:.2f}"),
               common.Column("at_rate", "payload@rate ms", "{:.0f}"),
               common.Column("ratio_to_payload_at_rate", "x @rate", "{:.2f}"),
               common.Column("raw_ratio_to_payload_at_rate", "raw x @rate", "{:.2f}"),
               common.Column("seconds", "ms/round", "{:.2f}"), common.Column("counted", "counted ms", "{:.2f}"),
               common.Column("raw_seconds", "raw ms", "{:.2f}"),
               common.Column("ratio_to_raw", "x raw", "{:.2f}"),
               common.Column("ratio_to_raw_min", "x raw (min)", "{:.2f}"),
               common.Column("skipped", "note")]
    shown = [{**r, "bytes_sent": r["bytes_sent"] / 1e6 if "bytes_sent" in r else None,
              "inter": r["inter_node_bytes_sent"] / 1e6 if "inter_node_bytes_sent" in r else None,
              "link": max(r["link_bytes_sent"], r["link_bytes_recv"]) / 1e6 if "link_bytes_sent" in r else None,
              "raw_link": (max(r["raw_link_bytes_sent"], r["raw_link_bytes_recv"]) / 1e6
                           if "raw_link_bytes_sent" in r else None),
              "at_rate": r["payload_at_rate_s"] * 1e3 if "seconds" in r and "payload_at_rate_s" in r else None,
              "seconds": r["seconds"] * 1e3 if "seconds" in r else None,
              "counted": r["counted_comm_seconds"] * 1e3 if "counted_comm_seconds" in r else None,
              "raw_seconds": r["raw_seconds"] * 1e3 if "raw_seconds" in r else None} for r in rows]
    m = result["machine"]
    common.report(f"Communication per round vs the raw exchange of the same bytes; {m['cpu_count']} CPUs, "
                  f"torch {m['torch']}, device {args.device}, median of {args.repeats} (slowest rank)",
                  columns, shown,
                  [common.Column("model", "model"), common.Column("nproc", "n"), common.Column("goal", "goal"),
                   common.Column("value", "measured", "{:.3f}"), common.Column("met", "met")],
                  result, args.json)
    return result


def plot_round_times(result: Dict[str, Any], path: Path) -> Path:
    """Milliseconds per round against the number of ranks, one panel per model: every case, and
    the raw exchange of the same bytes (dashed, the physical limit here)."""
    from crossover_sgd.plotting import pyplot, save_figure

    plt = pyplot()
    rows = [r for r in result["rows"] if "seconds" in r]
    models = sorted({r["model"] for r in rows}, key=result["settings"]["models"].index)
    fig, axes = plt.subplots(1, len(models), figsize=(6.4 * len(models), 4.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        for case in [c for c in result["settings"]["cases"] if any(r["case"] == c for r in mine)]:
            points = sorted((r["nproc"], r["seconds"] * 1e3) for r in mine if r["case"] == case)
            ax.plot(*zip(*points), marker="o", label=case)
        raw = {}
        for r in mine:  # one raw exchange per (case, n): its median over the cases of that n
            raw.setdefault(r["nproc"], []).append(r["raw_seconds"] * 1e3)
        ns = sorted(raw)
        ax.plot(ns, [sorted(raw[n])[len(raw[n]) // 2] for n in ns], "k--", label="raw exchange (same bytes)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_yscale("log")
        ax.set_xlabel("processes (Gloo ranks)")
        ax.set_ylabel("time per round (ms, median of the slowest rank)")
        ax.set_title(f"{model}: communication per round")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    machine = result["machine"]
    fig.suptitle(f"benchmarks/comm.py on {machine['cpu_count']} CPUs, torch {machine['torch']}", fontsize="small")
    return save_figure(fig, path, dpi=110)


def main(argv: List[str] | None = None) -> Dict[str, Any] | None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--nprocs", type=int, nargs="+", default=[2, 4],
                        help="world sizes to measure (the study's sizes: 2 4 8; 8 ranks of ResNet-50 take minutes)")
    parser.add_argument("--models", nargs="+", default=["resnet50", "small_cnn"],
                        choices=sorted(common.MODEL_SHAPES), help="parameter sets")
    parser.add_argument("--cases", nargs="+", default=list(ALGORITHM_CASES), choices=ALGORITHM_CASES + EXTRA_CASES,
                        help="algorithm settings")
    parser.add_argument("--raw-message-mb", type=float, default=None,
                        help="the raw exchange in messages of at most this many MB (0: one message; default: "
                             "one message over loopback, 1 MB on an emulated cluster)")
    parser.add_argument("--raw-sends-first", action="store_true",
                        help="post the raw exchange's sends before its receives (as the algorithms' rounds did once): "
                             "on a link-bound Gloo pair the two directions then take turns")
    parser.add_argument("--plot", type=Path, default=None, help="also draw time per round vs processes (PNG)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="measure nothing: draw --plot from the JSON of an earlier run")
    parser.set_defaults(warmup=1, repeats=3)
    args = parser.parse_args(argv)
    if args.from_json is not None:
        if args.plot is None:
            parser.error("--from-json needs --plot PNG")
        try:
            result = json.loads(args.from_json.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--from-json {args.from_json}: cannot read it as JSON ({exc})")
        if result.get("benchmark") != "comm":
            parser.error(f"--from-json {args.from_json}: not a result of benchmarks/comm.py")
        print(f"wrote {plot_round_times(result, args.plot)}")
        return result
    common.check_counts(parser, args)
    if args.quick:
        args.nprocs, args.models, args.warmup, args.repeats = [2], ["small_cnn"], 1, 2
    if any(n < 2 for n in args.nprocs):
        parser.error("--nprocs: communication needs 2 or more ranks")
    if args.raw_message_mb is not None and args.raw_message_mb < 0:
        parser.error("--raw-message-mb must be >= 0 (0: one message)")
    result = common.run_or_launch(Path(__file__).resolve(), args, run_rank, _rank_argv(args), report)
    if result is not None and args.plot is not None:
        print(f"wrote {plot_round_times(result, args.plot)}")
    return result


def _rank_argv(args: argparse.Namespace) -> List[str]:
    return ["--models", *args.models, "--cases", *args.cases, "--warmup", str(args.warmup),
            "--repeats", str(args.repeats), "--device", args.device, "--log-level", args.log_level,
            *(["--raw-message-mb", str(args.raw_message_mb)] if args.raw_message_mb is not None else []),
            *(["--raw-sends-first"] if args.raw_sends_first else [])]


if __name__ == "__main__":
    main()
