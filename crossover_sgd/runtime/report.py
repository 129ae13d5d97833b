"""``crossover-sgd launch-info``: every rank reports what it detected; rank 0 prints the table.

A quick check of a cluster setup before a long job: ranks, local ranks, nodes, the rendezvous
address, the device and backend each rank would use.
"""

from __future__ import annotations

import json
import socket
import sys
from argparse import Namespace
from typing import Dict, List, Optional

import torch.distributed as dist

from crossover_sgd.atomic import atomic_write_json, probe_file, user_output, user_path_error
from crossover_sgd.errors import ConfigError
from crossover_sgd.runtime.launch import detect_launch, resolve_rendezvous
from crossover_sgd.runtime.process_group import init_distributed, select_backend, select_device, shutdown

__all__ = ["launch_report", "check_json"]


def check_json(path: Optional[str], rank: int = 0) -> None:
    """Refuse a ``--json`` path that cannot be written (read-only or full filesystem, ``/proc``, a
    directory in the way) before any process group starts; leaves nothing behind. Every rank
    finds it alike: rank 0 reports it."""
    if path is None:
        return
    try:
        probe_file(path)
    except OSError as exc:
        error = ConfigError(user_path_error("--json", path, exc, kind="file").message())
        error.quiet = rank != 0
        raise error from None


def launch_report(args: Namespace) -> List[Dict[str, object]]:
    """Start the process group as training would, gather each rank's view, print it on rank 0."""
    info = detect_launch()
    check_json(args.json, info.rank)
    device = select_device(info, args.device)
    backend = select_backend(device, args.backend)
    info = resolve_rendezvous(info)
    ctx = init_distributed(info, device=device, backend=backend, timeout_s=120.0, gpu_per_node=args.gpu_per_node)
    try:
        mine = {"rank": ctx.rank, "world_size": ctx.world_size, "local_rank": ctx.local_rank,
                "local_size": ctx.local_size, "node_id": ctx.node_id, "launcher": ctx.launcher,
                "launcher_local_rank": info.local_rank, "launcher_local_size": info.local_size,
                "launcher_node_id": info.node_id, "master_addr": info.master_addr,
                "master_port": info.master_port, "host": socket.gethostname(), "device": str(device),
                "backend": backend}
        table: List[Dict[str, object]] = [{} for _ in range(ctx.world_size)]
        dist.all_gather_object(table, mine)
        if ctx.is_main:
            for row in table:
                print(json.dumps(row, sort_keys=True), file=sys.stdout, flush=True)
            if args.json:
                with user_output("--json", args.json, kind="file"):  # a failed write: one line naming --json
                    atomic_write_json(args.json, table)
        return table
    finally:
        shutdown()
