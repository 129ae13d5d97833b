"""One round of each peer-to-peer method against the raw exchange of its bytes and against SGD's step.

For each model (ResNet-18, CIFAR-style, 11.2 M fp32 parameters, and the default job's small CNN,
29 k) and each world size ``n`` (Gloo processes on this machine, started with the local
launcher, one thread each), every method of the peer-to-peer family (``--algorithm dsgd |
gossip-sgd | pdmm-sgd | admm-sgd | pdmm-isvr | admm-isvr | cadmm``: the real classes, built by
``build_algorithm`` from a ``TrainConfig`` and prepared on the model) runs on a generated
``--graph ring`` with ``--round 1`` (every edge exchanges at every step; CADMM with
``--primal-iterations 1``, so that every ``after_step`` is a round), and two comparisons are timed
side by side, in alternating windows:

* **the round**: ``algorithm.after_step`` (mixing, the messages built, exchanged over the per-edge
  Gloo links and absorbed, the model unpacked) against the **raw exchange**: plain
  ``torch.distributed`` ``isend``/``irecv`` over the *default* process group of one flat tensor
  of the method's message size to and from each of the same neighbours, all posted at once and
  waited for in the calling thread (no per-edge groups, no staging copies, no waiter threads):
  the physical limit of moving those bytes between these processes. Goal: at most 1.2x.
* **the local update** (the primal-dual methods and CADMM, which replace the optimizer's step):
  ``algorithm.optimizer_step`` on fixed random gradients against
  ``torch.optim.SGD(params, lr, foreach=True).step()`` on the same model and gradients (no
  momentum, no weight decay: the methods' update has neither). Goal: at most 2x. D-SGD and Gossip
  SGD take the optimizer's own step (nothing to compare).

Every window starts after a barrier and lasts until the slowest rank is done; a window holds
``--rounds`` rounds (``--local-steps`` local updates); reported: seconds per round (per update),
median and minimum over ``--repeats`` windows, their ratios, the message bytes, the bytes the
method itself counts as sent per round, and the goals. "counted ms" is the mean per round, over
every window including the warmup, of the time the method counts as communication itself
(``CommStats.seconds``: the links' exchange with its staging copies, without mixing or absorbing).

Made for Gloo on the CPU (what the links use): with ``--device cuda`` under a launcher the raw
exchange runs over the default group's NCCL, while the links stage through host memory over Gloo.

Usage: ``python3 benchmarks/p2p_round.py [--nprocs 4] [--models resnet18 small_cnn] [--json out.json]``
(``--ranks``/``--model`` are aliases; ``--quick``: 2 ranks, the small CNN, 1 warmup, 2 repeats).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

log = logging.getLogger("benchmarks.p2p_round")

METHODS = ("dsgd", "gossip-sgd", "pdmm-sgd", "admm-sgd", "pdmm-isvr", "admm-isvr", "cadmm")
#: The methods whose ``optimizer_step`` is a local update of their own (the others: the optimizer's step).
LOCAL_UPDATE_METHODS = ("pdmm-sgd", "admm-sgd", "pdmm-isvr", "admm-isvr", "cadmm")
ROUND_GOAL, LOCAL_GOAL = 1.2, 2.0
RAW_TAG = 998  # distinct from every other tag on the default group
LR = 0.01
#: Rounds (local updates) per timed window when not given: enough that a small model's window
#: is not dominated by the barrier and the timer.
AUTO_ROUNDS = {"small_cnn": 20, "resnet18": 1, "resnet50": 1}
AUTO_LOCAL_STEPS = {"small_cnn": 50, "resnet18": 3, "resnet50": 1}
RAW_BASELINE = ("plain torch.distributed isend/irecv over the default process group: one flat tensor of the "
                "method's message size to and from each of the same graph neighbours, all posted at once, waited "
                "for in the calling thread (no per-edge groups, staging copies or waiter threads)")
SGD_BASELINE = "torch.optim.SGD(params, lr, momentum=0, weight_decay=0, foreach=True).step() on the same model"


class RawNeighbourExchange:
    """Per call: one flat message of ``numel`` elements to each neighbour and one from each,
    posted together over the default group, then waited for."""

    def __init__(self, neighbours: List[int], numel: int, dtype: torch.dtype, device: torch.device):
        self.neighbours = list(neighbours)
        self.send = {p: torch.randn(numel, device=device).to(dtype) for p in self.neighbours}
        self.recv = {p: torch.empty(numel, dtype=dtype, device=device) for p in self.neighbours}

    @property
    def nbytes_per_neighbour(self) -> int:
        t = next(iter(self.send.values()))
        return t.numel() * t.element_size()

    def __call__(self) -> None:
        requests = []
        for peer in self.neighbours:
            requests.append(dist.isend(self.send[peer], peer, tag=RAW_TAG))
            requests.append(dist.irecv(self.recv[peer], peer, tag=RAW_TAG))
        for request in requests:
            request.wait()


def method_case(method: str, graph: str) -> common.Case:
    options: Dict[str, Any] = {"algorithm": method, "graph": graph, "round": 1, "lr": LR, "momentum": 0.0,
                               "weight_decay": 0.0, "seed": 0}
    if method == "cadmm":
        options["primal_iterations"] = 1  # every after_step is a round (default 2: every other one)
    return common.Case(method, options)


def fixed_gradients(model: torch.nn.Module, seed: int) -> None:
    """Small random gradients, the same at every window (the local updates read them)."""
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = (1e-3 * torch.randn(p.shape, generator=generator, dtype=torch.float32)).to(p.device, p.dtype)


def repeated(work: Callable[[], None], count: int) -> Callable[[], None]:
    return common.steps_window(work, count)


def measure_method(ctx, model_name: str, method: str, args: argparse.Namespace) -> Dict[str, Any]:
    """One row: the round against the raw exchange, the local update against SGD (collective)."""
    device, n = ctx.device, ctx.world_size
    rounds = args.rounds or AUTO_ROUNDS.get(model_name, 1)
    local_steps = args.local_steps or AUTO_LOCAL_STEPS.get(model_name, 1)
    model = common.build_bench_model(model_name, device)
    algorithm = common.make_algorithm(ctx, method_case(method, args.graph))
    algorithm.prepare(model)
    fixed_gradients(model, seed=1000 + ctx.rank)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.0, weight_decay=0.0, foreach=True)
    neighbours = list(algorithm.nodes.neighbours(ctx.rank))
    edge = algorithm.links.edges[neighbours[0]]
    message_numel, dtype = edge.outbox.numel(), edge.outbox.dtype
    raw = RawNeighbourExchange(neighbours, message_numel, dtype, device)
    row: Dict[str, Any] = {"model": model_name, "nproc": n, "method": method, "graph": args.graph,
                           "neighbours": len(neighbours), "parameters": sum(p.numel() for p in model.parameters()),
                           "message_bytes": message_numel * edge.outbox.element_size(),
                           "rounds_per_window": rounds}
    if ctx.rank == 0:
        log.info("%s, %d ranks, %s: after_step vs raw exchange of %.3f MB per neighbour (%d warmup + %d repeats "
                 "of %d rounds)", model_name, n, method, row["message_bytes"] / 1e6, args.warmup, args.repeats, rounds)

    def round_() -> None:
        algorithm.after_step(optimizer)

    sent_before, recv_before = algorithm.comm.bytes_sent, algorithm.comm.bytes_recv
    counted_before, calls = algorithm.comm.seconds, (args.warmup + args.repeats) * rounds
    samples = common.interleave({"raw": repeated(raw, rounds), "round": repeated(round_, rounds)}, device,
                                args.warmup, args.repeats)
    per_round = {k: [s / rounds for s in v] for k, v in samples.items()}
    counted = common.max_over_ranks([(algorithm.comm.seconds - counted_before) / calls], device)[0]
    mine, base = common.summarize(per_round["round"]), common.summarize(per_round["raw"])
    row.update(round_s=mine["median_s"], round_s_min=mine["min_s"], raw_s=base["median_s"], raw_s_min=base["min_s"],
               ratio_to_raw=mine["median_s"] / base["median_s"], ratio_to_raw_min=mine["min_s"] / base["min_s"],
               bytes_sent_per_round=(algorithm.comm.bytes_sent - sent_before) / calls,
               bytes_recv_per_round=(algorithm.comm.bytes_recv - recv_before) / calls,
               raw_bytes_sent_per_round=raw.nbytes_per_neighbour * len(neighbours),
               raw_gbytes_per_s=raw.nbytes_per_neighbour * len(neighbours) / base["median_s"] / 1e9,
               counted_comm_s=counted, round_samples=per_round["round"], raw_samples=per_round["raw"])

    if method in LOCAL_UPDATE_METHODS:
        if ctx.rank == 0:
            log.info("%s, %d ranks, %s: optimizer_step vs SGD(foreach=True).step() (%d warmup + %d repeats of %d "
                     "updates)", model_name, n, method, args.warmup, args.repeats, local_steps)

        def local_update() -> None:
            algorithm.optimizer_step(optimizer.step, optimizer)

        samples = common.interleave({"sgd": repeated(optimizer.step, local_steps),
                                     "local": repeated(local_update, local_steps)}, device, args.warmup, args.repeats)
        per_step = {k: [s / local_steps for s in v] for k, v in samples.items()}
        mine, base = common.summarize(per_step["local"]), common.summarize(per_step["sgd"])
        row.update(local_steps_per_window=local_steps, local_s=mine["median_s"], local_s_min=mine["min_s"],
                   sgd_s=base["median_s"], sgd_s_min=base["min_s"], ratio_to_sgd=mine["median_s"] / base["median_s"],
                   ratio_to_sgd_min=mine["min_s"] / base["min_s"], local_samples=per_step["local"],
                   sgd_samples=per_step["sgd"])
    else:
        row["local_update"] = "the optimizer's own step (no local update of its own)"
    algorithm.flush()
    algorithm.finish("finished")  # ends this method's heartbeat, as the training loop does
    return row


def run_rank(args: argparse.Namespace) -> None:
    ctx = common.join_process_group(args.device)
    try:
        rows = []
        for model_name in args.models:
            for method in args.methods:
                rows.append(measure_method(ctx, model_name, method, args))
                gc.collect()  # the method's model, duals and buffers are gone before the next is built
        common.finish_rank(ctx, args, {"nproc": ctx.world_size, "rows": rows}, report)
    finally:
        common.leave_process_group()


def goals(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for r in rows:
        key = {"model": r["model"], "nproc": r["nproc"], "method": r["method"]}
        out.append({**key, "goal": f"after_step / raw exchange <= {ROUND_GOAL}", "value": r["ratio_to_raw"],
                    "value_min": r["ratio_to_raw_min"], "met": r["ratio_to_raw"] <= ROUND_GOAL})
        if "ratio_to_sgd" in r:
            out.append({**key, "goal": f"optimizer_step / SGD(foreach) step <= {LOCAL_GOAL}",
                        "value": r["ratio_to_sgd"], "value_min": r["ratio_to_sgd_min"],
                        "met": r["ratio_to_sgd"] <= LOCAL_GOAL})
    return out


def _ms(value: Optional[float]) -> Optional[float]:
    return None if value is None else value * 1e3


def report(parts: List[Dict[str, Any]], args: argparse.Namespace) -> Dict[str, Any]:
    """Print the table and the goals; write ``--json``."""
    rows = [row for part in parts for row in part["rows"]]
    result = {"benchmark": "p2p_round", "machine": common.machine_info(args.device),
              "settings": {"nprocs": [p["nproc"] for p in parts], "models": args.models, "methods": args.methods,
                           "graph": args.graph, "round": 1, "lr": LR, "warmup": args.warmup, "repeats": args.repeats,
                           "rounds_per_window": args.rounds, "local_steps_per_window": args.local_steps,
                           "threads_per_rank": 1, "raw_baseline": RAW_BASELINE, "sgd_baseline": SGD_BASELINE,
                           "goals": {"round_to_raw": ROUND_GOAL, "local_to_sgd": LOCAL_GOAL}},
              "rows": rows, "goals": goals(rows)}
    shown = [{**r, "message_mb": r["message_bytes"] / 1e6, "round_ms": _ms(r.get("round_s")),
              "raw_ms": _ms(r.get("raw_s")), "counted_ms": _ms(r.get("counted_comm_s")),
              "local_ms": _ms(r.get("local_s")), "sgd_ms": _ms(r.get("sgd_s"))} for r in rows]
    columns = [common.Column("model", "model"), common.Column("nproc", "n"), common.Column("method", "method"),
               common.Column("message_mb", "MB/msg", "{:.3f}"), common.Column("neighbours", "nbrs"),
               common.Column("round_ms", "round ms", "{:.3f}"), common.Column("counted_ms", "counted ms", "{:.3f}"),
               common.Column("raw_ms", "raw ms", "{:.3f}"), common.Column("ratio_to_raw", "x raw", "{:.2f}"),
               common.Column("ratio_to_raw_min", "x raw (min)", "{:.2f}"),
               common.Column("local_ms", "local ms", "{:.3f}"), common.Column("sgd_ms", "SGD ms", "{:.3f}"),
               common.Column("ratio_to_sgd", "x SGD", "{:.2f}"),
               common.Column("ratio_to_sgd_min", "x SGD (min)", "{:.2f}")]
    m = result["machine"]
    common.report(f"Peer-to-peer round (after_step) vs the raw isend/irecv of the same bytes to the same neighbours "
                  f"(default group), and the local update vs SGD(foreach=True).step(); graph {args.graph}, "
                  f"{m['cpu_count']} CPUs, torch {m['torch']}, device {args.device}, median of {args.repeats} "
                  f"windows (slowest rank)",
                  columns, shown,
                  [common.Column("model", "model"), common.Column("nproc", "n"), common.Column("method", "method"),
                   common.Column("goal", "goal"), common.Column("value", "median", "{:.2f}"),
                   common.Column("value_min", "min", "{:.2f}"), common.Column("met", "met")],
                  result, args.json)
    return result


def _rank_argv(args: argparse.Namespace) -> List[str]:
    argv = ["--models", *args.models, "--methods", *args.methods, "--graph", args.graph, "--warmup",
            str(args.warmup), "--repeats", str(args.repeats), "--device", args.device, "--log-level", args.log_level]
    if args.rounds is not None:
        argv += ["--rounds", str(args.rounds)]
    if args.local_steps is not None:
        argv += ["--local-steps", str(args.local_steps)]
    return argv


def main(argv: List[str] | None = None) -> Dict[str, Any] | None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--nprocs", "--ranks", dest="nprocs", type=int, nargs="+", default=[4],
                        help="world sizes to measure (nodes of the graph, one rank each)")
    parser.add_argument("--models", "--model", dest="models", nargs="+", default=["resnet18", "small_cnn"],
                        choices=("resnet18", "small_cnn", "resnet50"), help="parameter sets")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="peer-to-peer methods")
    parser.add_argument("--graph", default="ring", choices=("ring", "complete"),
                        help="the generated graph (--round 1: every edge at every step)")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"rounds per timed window (default per model: {AUTO_ROUNDS})")
    parser.add_argument("--local-steps", type=int, default=None,
                        help=f"local updates per timed window (default per model: {AUTO_LOCAL_STEPS})")
    parser.set_defaults(warmup=1, repeats=5)
    args = parser.parse_args(argv)
    common.check_counts(parser, args)
    if args.quick:
        args.nprocs, args.models, args.warmup, args.repeats = [2], ["small_cnn"], 1, 2
    if any(n < 2 for n in args.nprocs):
        parser.error("--nprocs: a graph needs 2 or more ranks")
    if (args.rounds is not None and args.rounds < 1) or (args.local_steps is not None and args.local_steps < 1):
        parser.error("--rounds and --local-steps must be >= 1")
    return common.run_or_launch(Path(__file__).resolve(), args, run_rank, _rank_argv(args), report)


if __name__ == "__main__":
    main()
