"""One rank of a training run: detect the launch, check everything, take the rank's role, run its
loop, write the summary.

Every check that can fail on user input runs before the process group starts and before any
file is written, on every rank (:func:`~crossover_sgd.training.preflight.preflight`); a barrier
then separates checking from writing. The algorithm says what each rank is
(:meth:`Algorithm.roles`): trainers run the :class:`Trainer` over the training group, other roles
run the algorithm's own loop.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist

from crossover_sgd.algorithms import ALGORITHMS, Algorithm, RoleEnv, build_algorithm
from crossover_sgd.atomic import atomic_write_json
from crossover_sgd.comm import first_line, is_communication_failure
from crossover_sgd.config import RESNETS, TrainConfig
from crossover_sgd.errors import ConfigError, render_fields
from crossover_sgd.logs import add_log_file, setup_logging
from crossover_sgd.runtime.launch import LaunchInfo, detect_launch
from crossover_sgd.runtime.local_launcher import PEER_FAILURE_EXIT, report_line
from crossover_sgd.runtime.process_group import (TRAINER, DistContext, assign_roles, init_distributed,
                                                 logical_placement, select_backend, select_device, shutdown)
from crossover_sgd.runtime.watchdog import Heartbeat, end_rank
from crossover_sgd.training.checkpoint import load_checkpoint
from crossover_sgd.training.data import build_datasets
from crossover_sgd.training.evaluation import evaluator
from crossover_sgd.training.models import initial_model, model_dtype
from crossover_sgd.training.outputs import RunDirectory, default_out_dir
from crossover_sgd.training.preflight import preflight
from crossover_sgd.training.trainer import Trainer

__all__ = ["run_worker"]

log = logging.getLogger(__name__)


def check_world_size(config: TrainConfig, info: LaunchInfo) -> None:
    if config.world_size is not None and config.world_size != info.world_size:
        n = config.world_size
        how = (f"; this process was started alone: start {n} ranks with {{nproc}} {n}, or under srun -n {n}, "
               f"torchrun --nproc-per-node {n} or mpirun -np {n}" if info.launcher == "single" else "")
        raise ConfigError(f"{{world_size}} {n} disagrees with the launcher: {info.launcher} "
                          f"started {info.world_size} rank(s){how}")


def run_worker(config: TrainConfig, flag_names: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run as one rank of the job this process was launched into; return the run's result.

    ``flag_names`` writes settings as the entry point's flags in rank 0's warning about options
    without effect (the legacy script's names)."""
    started = time.perf_counter()
    cls = ALGORITHMS[config.algorithm]
    if detect_launch().launcher == "single":  # e.g. a node started by hand: the algorithm knows its rank
        try:
            os.environ.update(cls.launch_env(cls.options_of(config)))
        except ConfigError as exc:
            exc.quiet = False
            raise
    info = detect_launch()
    setup_logging(info.rank, config.log_level, every_rank=info.launcher == "hosts")  # by hand: its own console
    try:
        check_world_size(config, info)
        logical_placement(info, config.gpu_per_node)
        device = select_device(info, config.device)
        backend = select_backend(device, config.backend)
        preflight(config, info.world_size, device)
    except ConfigError as exc:
        exc.quiet = info.rank != 0  # config x launch: alike on every rank, rank 0 says it
        raise
    data = build_datasets(config)
    roles = cls.roles(info.world_size, cls.options_of(config))
    resume_state: Optional[Dict[str, Any]] = None
    if config.resume:  # a rank of another role (a server) resumes from the first trainer's state
        expected = {"world_size": info.world_size, "algorithm": config.algorithm, "model": config.model,
                    "dataset": config.dataset, "batch_size": config.batch_size, "local_itr": config.local_itr}
        owner = info.rank if roles[info.rank] == TRAINER else roles.index(TRAINER)
        resume_state = load_checkpoint(Path(config.out), owner, expected, device, own=not cls.group_collectives)

    ctx = init_distributed(info, device=device, backend=backend, timeout_s=config.timeout,
                           gpu_per_node=config.gpu_per_node)
    heartbeat = start_heartbeat(ctx)  # the algorithm may read its peers' liveness from it (ctx.heartbeat)
    diagnosis = heartbeat if cls.group_collectives else None  # otherwise the algorithm's links name lost peers
    try:
        ctx = replace(assign_roles(ctx, roles), heartbeat=heartbeat)
        return _run(config, ctx, data, resume_state, started, flag_names or {})
    except ConfigError as exc:
        exc.quiet = ctx.rank != 0  # found alike by every rank (config x world): rank 0 reports it
        raise
    except (dist.DistError, RuntimeError) as exc:
        if not is_communication_failure(exc):
            raise
        reason = diagnosis.diagnose() if diagnosis is not None else first_line(exc, 300)
        if diagnosis is None or diagnosis.reports():  # said once per job: by the lowest rank still alive
            detail = f" ({first_line(exc, 300)})" if diagnosis is not None else ""
            report_line(f"crossover-sgd: error: rank {ctx.rank}: communication failed: {reason}{detail}",
                        exit_code=PEER_FAILURE_EXIT)
        os._exit(PEER_FAILURE_EXIT)  # the process group is broken: do not wait for collectives at exit
    finally:
        if heartbeat is not None:
            heartbeat.close()
        shutdown()


def warn_ineffective_options(config: TrainConfig, flag_names: Dict[str, str]) -> None:
    """One warning line listing the options set to a value this run does not use (job scripts
    pass every flag to every algorithm: they are accepted, but the user should know)."""
    unused = config.ineffective_options(flag_names)
    if unused:
        log.warning("options without effect in this run: %s", "; ".join(unused))


def start_heartbeat(ctx: DistContext) -> Optional[Heartbeat]:
    """A heartbeat in the rendezvous store (multi-rank runs only). It serves the diagnosis of
    a lost peer: if it cannot connect within the process-group timeout, the run goes on without.
    Its watchdog ends this rank (one line, exit code 4) when the store has not answered a beat
    for the process-group timeout: cut off from the store, the rank cannot rendezvous with
    anybody, and nothing else bounds its waits for the store (:mod:`~crossover_sgd.runtime.watchdog`)."""
    if ctx.world_size == 1:
        return None
    try:
        beat = Heartbeat(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), ctx.rank, ctx.world_size,
                         connect_timeout=ctx.timeout_s).start()
    except (dist.DistError, RuntimeError) as exc:
        log.warning("rank %d: no heartbeat (a lost peer will not be named): %s", ctx.rank, first_line(exc))
        return None
    return beat.watch(ctx.timeout_s, end_rank(ctx.rank))


def _run(config: TrainConfig, ctx: DistContext, data, resume_state, started: float,
         flag_names: Dict[str, str]) -> Dict[str, Any]:
    """Everything after the process group exists: outputs, this rank's role, the summary."""
    chosen = [str(config.out) if config.out is not None else str(default_out_dir(config))]
    dist.broadcast_object_list(chosen, src=0)
    own = config.out is not None and not ALGORITHMS[config.algorithm].group_collectives
    out = Path(config.out if own else chosen[0])  # nodes started by hand may each name their own directory
    algorithm = build_algorithm(ctx, config, out)
    trainer = Trainer(config, ctx, data, algorithm, out) if ctx.role == TRAINER else None  # may refuse input
    role_model = None
    if trainer is None:  # another role (a server): its initial model, checked like a trainer's
        algorithm.plan(0, len(data.train))  # what depends on the data is refused on every rank alike
        role_model = initial_model(config, data.num_classes, data.in_channels, data.image_size, ctx.device)
        algorithm.prepare_role(role_model, resume_state)
    run_dir = RunDirectory(out, ctx.trainers)  # what exists before any rank creates it (see RunDirectory)
    dist.barrier()  # every rank has checked its input; from here on files are written
    # the first trainer writes the run's files; so does a node started by hand into a directory of its own
    lead = ctx.is_main or (own and out.resolve() != Path(chosen[0]).resolve())
    with run_dir.writing():  # a failed write: one line naming --out; a directory of no value is removed
        if lead:
            run_dir.log_file(add_log_file(out / "train.log", ctx.rank))
            roles = "" if ctx.train_size == ctx.world_size else f" ({ctx.train_size} train)"
            log.info("%s: %d rank(s)%s via %s, backend %s, device %s, out %s", config.algorithm, ctx.world_size, roles,
                     ctx.launcher, ctx.backend, ctx.device, out)
            if not config.resume:
                atomic_write_json(out / "config.json", config.to_dict())
            warn_ineffective_options(config, flag_names)
            if ctx.device.type == "cpu" and config.model in RESNETS:
                log.warning("%s", render_fields(f"{{model}} {config.model} on the CPU: expect seconds to minutes per "
                                                "step; for a quick check of a setup use {dataset} digits {model} "
                                                "small_cnn", flag_names))
        if trainer is None:
            env = RoleEnv(out, evaluator(data.val, ctx.device, model_dtype(config), config.batch_size))
            result = algorithm.run_role(role_model, env)
        else:
            if resume_state is not None:
                trainer.load_state_dict(resume_state)
            result = _train(config, ctx, trainer, algorithm, out, started, lead)
        if algorithm.group_collectives:
            dist.barrier()  # every rank, whatever its role, leaves together
        return result


def _train(config: TrainConfig, ctx: DistContext, trainer: Trainer, algorithm: Algorithm, out: Path,
           started: float, lead: bool) -> Dict[str, Any]:
    """A trainer's loop, then the run's summary (written by the first trainer, or ``lead``: a node
    started by hand into a directory of its own)."""
    result = trainer.fit()
    trained_s = trainer.wall_time()  # before finish(), which may wait for other ranks
    algorithm.finish(result["status"])
    finals = trainer.group.gather_objects(result["final"])
    summary = {
        "status": result["status"],
        "config": config.to_dict(), "world_size": ctx.world_size, "launcher": ctx.launcher,
        "backend": ctx.backend, "device": ctx.device.type, "local_size": ctx.local_size,
        "epochs_done": result["epoch"], "steps_done": result["step"],
        "steps_per_epoch": trainer.steps_per_epoch,
        "global_batch": config.batch_size * config.local_itr * ctx.train_size,
        "final_val_acc": [f["val_acc"] if f else None for f in finals],
        "final_val_loss": [f["val_loss"] if f else None for f in finals],
        "comm": algorithm.comm.as_dict(),
        "wall_time_s": round(trained_s, 3),
        "process_time_s": round(time.perf_counter() - started, 3),
        "torch": torch.__version__,
    }
    label = algorithm.node_label()
    if label is None:  # e.g. a parameter server's workers and its result (this trainer's alone without collectives)
        parts = trainer.group.gather_objects(algorithm.summary())
        if any(parts):
            summary["trainers"] = parts
    if label is not None:  # every node writes its own (it may be the only one left)
        summary["node"] = algorithm.summary()
        (out / "nodes").mkdir(exist_ok=True)
        atomic_write_json(out / "nodes" / f"{label}.json", {**summary, "final": result["final"]})
    if lead:
        atomic_write_json(out / "summary.json", summary)
        accs = [a for a in summary["final_val_acc"] if a is not None]
        if accs:
            log.info("done: val_acc per rank %s; outputs in %s", ", ".join(f"{a:.4f}" for a in accs), out)
    return summary
