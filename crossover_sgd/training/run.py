"""One rank of a training run: detect the launch, check everything, train, write the summary.

Every check that can fail on user input runs before the process group starts and before any
file is written, on every rank; a barrier then separates checking from writing.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist

from crossover_sgd.algorithms import build_algorithm
from crossover_sgd.atomic import atomic_write_json
from crossover_sgd.config import TrainConfig, rename_flags
from crossover_sgd.errors import ConfigError, PeerError
from crossover_sgd.logs import add_log_file, setup_logging
from crossover_sgd.runtime.launch import LaunchInfo, detect_launch
from crossover_sgd.runtime.watchdog import Heartbeat
from crossover_sgd.runtime.process_group import (DistContext, init_distributed, logical_placement, select_backend,
                                                 select_device, shutdown)
from crossover_sgd.training.checkpoint import load_checkpoint
from crossover_sgd.training.data import build_datasets
from crossover_sgd.training.outputs import check_out_dir
from crossover_sgd.training.precision import check_amp
from crossover_sgd.training.trainer import Trainer

__all__ = ["run_worker", "default_out_dir"]

log = logging.getLogger(__name__)


def default_out_dir(config: TrainConfig) -> Path:
    """``runs/<tag or algorithm>-<date-time>``, made unique if it exists."""
    base = Path("runs") / f"{config.tag or config.algorithm}-{datetime.now():%Y%m%d-%H%M%S}"
    out, n = base, 1
    while out.exists():
        out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out


def check_world_size(config: TrainConfig, info: LaunchInfo) -> None:
    if config.world_size is not None and config.world_size != info.world_size:
        raise ConfigError(f"--world_size {config.world_size} disagrees with the launcher: {info.launcher} "
                          f"started {info.world_size} rank(s)")


def run_worker(config: TrainConfig, flag_names: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Train as one rank of the job this process was launched into; return the run's result.

    ``flag_names`` renames flags in rank 0's warning about options without effect (the legacy
    script's names)."""
    started = time.perf_counter()
    info = detect_launch()
    setup_logging(info.rank, config.log_level)
    try:
        check_world_size(config, info)
        logical_placement(info, config.gpu_per_node)
    except ConfigError as exc:
        exc.quiet = info.rank != 0  # config x launcher's world size: alike on every rank, rank 0 says it
        raise
    device = select_device(info, config.device)
    backend = select_backend(device, config.backend)
    check_amp(config.amp, device)
    data = build_datasets(config)
    resume_state: Optional[Dict[str, Any]] = None
    if config.out is not None:
        out = Path(config.out)
        check_out_dir(out, config.resume)
        if config.resume:
            expected = {"world_size": info.world_size, "algorithm": config.algorithm, "model": config.model,
                        "dataset": config.dataset, "batch_size": config.batch_size, "local_itr": config.local_itr}
            resume_state = load_checkpoint(out, info.rank, expected, device)
    elif config.resume:
        raise ConfigError("--resume needs --out DIR naming the run to continue")

    ctx = init_distributed(info, device=device, backend=backend, timeout_s=config.timeout,
                           gpu_per_node=config.gpu_per_node)
    heartbeat = start_heartbeat(ctx)
    try:
        return _train(config, ctx, data, device, resume_state, started, flag_names or {})
    except ConfigError as exc:
        exc.quiet = ctx.rank != 0  # found alike by every rank (config x world): rank 0 reports it
        raise
    except (PeerError, dist.DistError, RuntimeError) as exc:
        if not is_communication_failure(exc):
            raise
        reason = heartbeat.diagnose() if heartbeat is not None else "the peer died or stopped answering"
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        print(f"crossover-sgd: error: rank {ctx.rank}: communication failed: {reason} ({first})",
              file=sys.stderr, flush=True)
        os._exit(3)  # the process group is broken: do not wait for collectives in atexit handlers
    finally:
        if heartbeat is not None:
            heartbeat.close()
        shutdown()


def warn_ineffective_options(config: TrainConfig, flag_names: Dict[str, str]) -> None:
    """One warning line listing the options set to a value this run does not use (job scripts
    pass every flag to every algorithm: they are accepted, but the user should know)."""
    unused = config.ineffective_options()
    if unused:
        log.warning("options without effect in this run: %s", rename_flags("; ".join(unused), flag_names))


def start_heartbeat(ctx: DistContext) -> Optional[Heartbeat]:
    """A heartbeat in the rendezvous store (multi-rank runs only). It only serves the diagnosis of
    a lost peer: if it cannot connect within the process-group timeout, the run goes on without."""
    if ctx.world_size == 1:
        return None
    try:
        return Heartbeat(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), ctx.rank, ctx.world_size,
                         connect_timeout=ctx.timeout_s).start()
    except (dist.DistError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        log.warning("rank %d: no heartbeat (a lost peer will not be named): %s", ctx.rank, first)
        return None


def is_communication_failure(exc: BaseException) -> bool:
    """True for errors raised by a broken process group (not for bugs that are RuntimeErrors)."""
    if isinstance(exc, (PeerError, dist.DistError)):
        return True
    text = str(exc).lower()
    return any(word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout", "peer"))


def _train(config: TrainConfig, ctx: DistContext, data, device, resume_state, started: float,
           flag_names: Dict[str, str]) -> Dict[str, Any]:
    """Everything after the process group exists: outputs, the Trainer, the summary."""
    chosen = [str(config.out) if config.out is not None else str(default_out_dir(config))]
    dist.broadcast_object_list(chosen, src=0)
    out = Path(chosen[0])
    algorithm = build_algorithm(ctx, config)
    trainer = Trainer(config, ctx, data, algorithm, out)  # may still refuse the input: writes nothing
    dist.barrier()  # every rank has checked its input; from here on files are written
    out.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        add_log_file(out / "train.log", ctx.rank)
        log.info("%s: %d rank(s) via %s, backend %s, device %s, out %s", config.algorithm,
                 ctx.world_size, ctx.launcher, ctx.backend, device, out)
        if not config.resume:
            atomic_write_json(out / "config.json", config.to_dict())
        warn_ineffective_options(config, flag_names)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
    result = trainer.fit()
    finals = [None] * ctx.world_size
    dist.all_gather_object(finals, result["final"])
    summary = {
        "status": result["status"],
        "config": config.to_dict(), "world_size": ctx.world_size, "launcher": ctx.launcher,
        "backend": ctx.backend, "device": device.type, "local_size": ctx.local_size,
        "epochs_done": result["epoch"], "steps_done": result["step"],
        "steps_per_epoch": trainer.steps_per_epoch,
        "global_batch": config.batch_size * config.local_itr * ctx.world_size,
        "final_val_acc": [f["val_acc"] if f else None for f in finals],
        "final_val_loss": [f["val_loss"] if f else None for f in finals],
        "comm": algorithm.comm.as_dict(),
        "wall_time_s": round(trainer.wall_time(), 3),
        "process_time_s": round(time.perf_counter() - started, 3),
        "torch": torch.__version__,
    }
    if ctx.is_main:
        atomic_write_json(out / "summary.json", summary)
        accs = [a for a in summary["final_val_acc"] if a is not None]
        if accs:
            log.info("done: val_acc per rank %s; outputs in %s", ", ".join(f"{a:.4f}" for a in accs), out)
    dist.barrier()
    return summary
