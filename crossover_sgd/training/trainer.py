"""The one training loop of a trainer rank. It drives an :class:`~crossover_sgd.algorithms.Algorithm`
through its hooks and knows no algorithm by name; its collectives (evaluation, checkpoints,
preemption, the summary) run over the training group (:class:`TrainingGroup`), never the world."""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from crossover_sgd.algorithms import Algorithm
from crossover_sgd.config import TrainConfig
from crossover_sgd.errors import ConfigError
from crossover_sgd.runtime.process_group import DistContext
from crossover_sgd.training.consensus import consensus_model
from crossover_sgd.training.checkpoint import prune_own_checkpoints, publish_checkpoint, save_checkpoint
from crossover_sgd.training.data import DatasetBundle, default_workers
from crossover_sgd.training.evaluation import validation_totals
from crossover_sgd.training.group import TrainingGroup
from crossover_sgd.training.lars_sync import GroupNormSync
from crossover_sgd.training.models import initial_model, model_dtype
from crossover_sgd.training.optim import build_optimizer
from crossover_sgd.training.precision import Precision
from crossover_sgd.training.outputs import MetricsLog, NodeLog, TensorBoardLog
from crossover_sgd.training.partition import dataset_labels, node_splits
from crossover_sgd.training.preemption import Preemption
from crossover_sgd.training.sampler import ShardSampler
from crossover_sgd.training.schedule import LRSchedule

__all__ = ["Trainer"]

log = logging.getLogger(__name__)


class Trainer:
    """Train ``config.model`` on ``data`` with ``algorithm``, writing outputs under ``out``."""

    def __init__(self, config: TrainConfig, ctx: DistContext, data: DatasetBundle, algorithm: Algorithm,
                 out: Path):
        self.config, self.ctx, self.data, self.algorithm, self.out = config, ctx, data, algorithm, out
        self.group = TrainingGroup(ctx, collectives=algorithm.group_collectives)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.dtype = model_dtype(config)  # of the parameters; floating inputs are cast to it (--dtype)
        self.model = initial_model(config, data.num_classes, data.in_channels, data.image_size, ctx.device,
                                   self.memory_format)
        self.precision = Precision(config.amp, ctx.device, config.skip_nonfinite)
        self.train_model = algorithm.prepare(self.model)
        self.optimizer = build_optimizer(self.model, config)
        for group in self.optimizer.param_groups:
            group["base_weight_decay"] = group["weight_decay"]
        self.norm_sync = (GroupNormSync(self.optimizer, ctx.train_size, ctx.train_rank, config.sync_lars_group_size,
                                        algorithm.comm) if config.sync_lars_group_size else None)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        chunk = config.batch_size * config.local_itr
        train, self.local_val = data.train, None
        nodes_own_data = algorithm.node_label() is not None  # peer-to-peer nodes: "shard" means a fixed iid part
        if config.partition != "shard" or nodes_own_data:  # each trainer a node with its own part of the data
            part_config = dataclasses.replace(config, partition="iid") if config.partition == "shard" else config
            splits = node_splits(dataset_labels(data.train), ctx.train_size, part_config, num_classes=data.num_classes)
            split = splits[ctx.train_rank]
            train = Subset(data.train, split.train.tolist())
            self.local_val = Subset(data.train, split.val.tolist()) if len(split.val) else None
            self.sampler = ShardSampler(len(train), 0, 1, seed=config.seed + 7_919 * (ctx.train_rank + 1), chunk=chunk)
        else:
            self.sampler = ShardSampler(len(train), ctx.train_rank, ctx.train_size, seed=config.seed, chunk=chunk)
        self.steps_per_epoch = self.sampler.per_rank // chunk
        if config.partition != "shard" or nodes_own_data:  # every node the same number of steps (the
            # smallest part's): nodes that exchange at slots of their step count must end together
            self.steps_per_epoch = min(len(s.train) for s in splits) // chunk
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"{{batch_size}} {config.batch_size} x {{local_itr}} {config.local_itr} x {ctx.train_size} ranks "
                f"exceeds the {len(data.train)} training samples: no complete step per epoch; use smaller values")
        algorithm.plan(self.steps_per_epoch, len(train))
        self.workers = config.workers if config.workers is not None else default_workers(ctx.local_size)
        self.loader_rng = torch.Generator()
        self.loader = DataLoader(train, batch_size=config.batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=self.workers, pin_memory=ctx.device.type == "cuda",
                                 generator=self.loader_rng, persistent_workers=False)
        self.schedule = LRSchedule.from_config(config, self.steps_per_epoch)
        self.metrics = MetricsLog(out, ctx.rank,
                                  tensorboard=TensorBoardLog(out) if config.tensorboard and ctx.is_main else None)
        label = algorithm.node_label()
        self.node_log = NodeLog(out, label) if label is not None or config.partition != "shard" else None
        if self.node_log is not None and label is None:
            self.node_log = NodeLog(out, f"rank{ctx.rank}")
        self.step, self.epoch, self.micro_in_epoch = 0, 0, 0
        self.loss_sum = torch.zeros((), device=ctx.device)  # of the finite micro-batch losses
        self.loss_count = 0  # micro-batches
        self.train_correct = torch.zeros((), dtype=torch.int64, device=ctx.device)  # of the summed micro-batches
        self.train_seen = 0  # samples of those micro-batches
        self.loss_nonfinite = torch.zeros((), dtype=torch.int64, device=ctx.device)  # micro-batches not summed
        self.elapsed_before = 0.0  # wall time of earlier segments of a resumed run
        self.started = time.perf_counter()

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        cfg = self.config
        return {
            "world_size": self.ctx.world_size, "algorithm": cfg.algorithm, "model": cfg.model,
            "dataset": cfg.dataset, "batch_size": cfg.batch_size, "local_itr": cfg.local_itr, "dtype": cfg.dtype,
            "rank": self.ctx.rank, "step": self.step, "epoch": self.epoch, "micro_in_epoch": self.micro_in_epoch,
            "model_state": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "algorithm_state": self.algorithm.state_dict(), "precision": self.precision.state_dict(),
            "rng": torch.get_rng_state(),
            "loss_sum": self.loss_sum.detach().cpu(), "loss_count": self.loss_count,
            "loss_nonfinite": int(self.loss_nonfinite),
            "metrics": self.metrics.rows, "elapsed_s": self.wall_time(),
            "node_rows": self.node_log.rows if self.node_log is not None else [],
            "train_correct": int(self.train_correct), "train_seen": self.train_seen,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        saved = state.get("dtype", "float32")  # checkpoints written before --dtype existed: float32
        if saved != self.config.dtype:  # load_state_dict would cast silently and continue in another dtype
            raise ConfigError(f"{{resume}}: the checkpoint was written with {{dtype}} {saved}, "
                              f"but this run has {{dtype}} {self.config.dtype}: resume with {{dtype}} {saved}")
        self.model.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.algorithm.load_state_dict(state["algorithm_state"])
        self.precision.load_state_dict(state["precision"])
        torch.set_rng_state(state["rng"].cpu())
        self.step, self.epoch, self.micro_in_epoch = state["step"], state["epoch"], state["micro_in_epoch"]
        self.loss_sum = state["loss_sum"].to(self.ctx.device)
        self.loss_count = state["loss_count"]
        self.loss_nonfinite.fill_(state.get("loss_nonfinite", 0))
        self.metrics.rows = [dict(r) for r in state["metrics"]]
        self.metrics.write()
        if self.node_log is not None:
            self.node_log.rows = [dict(r) for r in state.get("node_rows", [])]
        self.train_correct.fill_(state.get("train_correct", 0))
        self.train_seen = state.get("train_seen", 0)
        self.elapsed_before = float(state["elapsed_s"])
        log.info("resumed at epoch %d, step %d", self.epoch, self.step)

    def wall_time(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def checkpoint(self) -> None:
        self.algorithm.flush()
        save_checkpoint(self.out, self.ctx.rank, self.step, self.state_dict())
        if not self.group.collectives:  # no agreement on a step: each trainer keeps its own latest
            prune_own_checkpoints(self.out, self.ctx.rank, self.step)
            return
        self.group.barrier()
        if self.ctx.is_main:
            publish_checkpoint(self.out, self.step, self.ctx.world_size, self.ctx.trainers)
        self.group.barrier()

    # ----------------------------------------------------------------------------- training
    def set_lr(self) -> float:
        """The schedule's learning rate for this step (and weight decay, with ``--wd-schedule``)."""
        factor = self.schedule.factor(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * factor
            if self.config.wd_schedule:
                group["weight_decay"] = group["base_weight_decay"] * factor
        return self.config.lr * factor

    def train_step(self, batches) -> None:
        """One optimizer step over ``local_itr`` micro-batches."""
        cfg, device = self.config, self.ctx.device
        self.set_lr()
        self.optimizer.zero_grad(set_to_none=True)
        for i, (inputs, targets) in enumerate(batches):
            inputs = self._to_device(inputs, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with self.algorithm.micro_batch(is_last=i == cfg.local_itr - 1):
                with self.precision.autocast():
                    logits = self.train_model(inputs)
                    loss = self.criterion(logits, targets)
                self.precision.backward(loss / cfg.local_itr)
            self.train_correct += (logits.detach().argmax(1) == targets).sum()
            self.train_seen += targets.numel()
            loss = loss.detach().float()  # a skipped step's non-finite loss must not make the epoch's NaN
            self.algorithm.observe(loss)
            finite = torch.isfinite(loss)
            self.loss_sum += torch.where(finite, loss, torch.zeros_like(loss))
            self.loss_nonfinite += ~finite
            self.loss_count += 1
        self.algorithm.before_step(self.optimizer)
        self.precision.unscale_(self.optimizer)
        if cfg.l2_lambda > 0:  # the loss's l2_lambda/2 * ||w||^2
            with torch.no_grad():
                params = [p for p in self.model.parameters() if p.grad is not None]
                torch._foreach_add_([p.grad for p in params], params, alpha=cfg.l2_lambda)
        if cfg.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
        if self.norm_sync is not None:
            self.optimizer.set_norm_hook(self.norm_sync if self.epoch >= cfg.sync_lars_start_epoch else None)
        self.algorithm.optimizer_step(lambda: self.precision.step(self.optimizer, self.model.parameters()),
                                      self.optimizer)
        self.algorithm.after_step(self.optimizer)
        self.step += 1
        self.micro_in_epoch += cfg.local_itr

    def _to_device(self, inputs: torch.Tensor, non_blocking: bool = False) -> torch.Tensor:
        """``inputs`` on the device in the memory format of the run, floating ones in the model's dtype."""
        dtype = self.dtype if inputs.is_floating_point() else inputs.dtype
        return inputs.to(self.ctx.device, dtype=dtype, non_blocking=non_blocking, memory_format=self.memory_format)

    def fit(self) -> Dict[str, Any]:
        """Train to the last epoch (or ``--stop-at-step``, or a preemption signal agreed by every
        rank: see :mod:`~crossover_sgd.training.preemption`); return the final evaluation."""
        driven = self.algorithm.drive(self)
        if driven is not None:
            return driven
        cfg = self.config
        stopped = None  # why the run ends early: "stopped" ({stop_at_step}) or "preempted" (a signal)
        preemption = Preemption(self.ctx, collectives=self.group.collectives).install()
        progress = self._progress()
        while self.epoch < cfg.epochs and not stopped:
            self.sampler.set_epoch(self.epoch, skip=self.micro_in_epoch * cfg.batch_size)
            self.loader_rng.manual_seed(cfg.seed * 1_000_003 + self.epoch * 1_009 + self.ctx.train_rank * 7
                                        + self.micro_in_epoch)
            batches = iter(self.loader)
            first = self.step - self.epoch * self.steps_per_epoch
            if progress is not None:
                progress.reset(total=self.steps_per_epoch)
                progress.update(first)
                progress.set_description(f"epoch {self.epoch + 1}/{cfg.epochs}")
            for _ in range(first, self.steps_per_epoch):
                self.train_step([next(batches) for _ in range(cfg.local_itr)])
                if progress is not None:
                    progress.update(1)
                if cfg.stop_at_step is not None and self.step >= cfg.stop_at_step:
                    stopped = "stopped"
                    break
                if preemption.should_stop(self.step):
                    stopped = "preempted"
                    break
            if stopped:
                break
            self.epoch, self.micro_in_epoch = self.epoch + 1, 0
            last = self.epoch == cfg.epochs
            if self.epoch % cfg.eval_every == 0 or last:
                self._evaluate_and_record()
            if self.epoch % cfg.checkpoint_every == 0 or last:
                self.checkpoint()
        if progress is not None:
            progress.close()
        preemption.close()
        if stopped:
            log.info("stopping at step %d %s; resume with --resume", self.step,
                     "as asked ({stop_at_step})" if stopped == "stopped" else "on a preemption signal")
            self.checkpoint()
        return {"stopped": stopped is not None, "status": stopped or "finished", "step": self.step,
                "epoch": self.epoch,
                "final": self.metrics.rows[-1] if self.metrics.rows else None}

    def _progress(self):
        if not (self.ctx.is_main and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(total=self.steps_per_epoch, unit="step", dynamic_ncols=True, leave=False)

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(self) -> Dict[str, float]:
        """This rank's validation loss and accuracy, and those of the consensus (averaged) model
        with the consensus distance (for algorithms whose replicas differ; without collectives
        over the training group: this replica's own accuracy, and no distance)."""
        self.algorithm.flush()
        model = self.algorithm.eval_model()
        if self.algorithm.replicas_identical:
            mine = self._validate(model, shard=True)
            return {**mine, "consensus_val_acc": mine["val_acc"], "consensus_distance": 0.0}
        if not self.group.collectives:
            mine = self._validate(model, shard=False)
            return {**mine, "consensus_val_acc": mine["val_acc"], "consensus_distance": float("nan")}
        average, distance = consensus_model(model, group=self.group.handle)
        return {**self._validate(model, shard=False),
                "consensus_val_acc": self._validate(average, shard=True)["val_acc"],
                "consensus_distance": distance}

    def _validate(self, model: nn.Module, shard: bool, val=None) -> Dict[str, float]:
        """Loss and accuracy of ``model`` on ``val`` (default: the validation set); ``shard``:
        every rank takes a part of the set (the model must then be the same on every rank) and
        the totals are summed."""
        val = self.data.val if val is None else val
        shard = shard and self.group.size > 1
        if shard:
            val = Subset(val, range(self.group.rank, len(val), self.group.size))
        totals = validation_totals(model, val, self._to_device, self.ctx.device, self.dtype, self.config.batch_size,
                                   self.workers, self.precision.autocast)
        if shard:
            self.group.sum_(totals, what="evaluation")
        model.train()
        loss_sum, correct, count = totals.tolist()
        return {"val_loss": loss_sum / max(count, 1), "val_acc": correct / max(count, 1)}

    def _evaluate_and_record(self) -> None:
        result = self.evaluate()
        summed = max(self.loss_count - int(self.loss_nonfinite), 0)
        train_loss = (self.loss_sum / max(summed, 1)).item() if summed > 0 or self.loss_count == 0 else float("nan")
        if not math.isfinite(train_loss):
            log.warning("training loss is %s at epoch %d: the run diverged", train_loss, self.epoch)
        comm = self.algorithm.comm
        row = {"epoch": self.epoch, "step": self.step, "train_loss": train_loss,
               "lr": self.optimizer.param_groups[0]["lr"], "comm_bytes_sent": comm.bytes_sent,
               "comm_bytes_recv": comm.bytes_recv, "comm_seconds": round(comm.seconds, 6),
               "skipped_steps": int(self.precision.skipped),
               "wall_time_s": round(self.wall_time(), 3), **self.algorithm.metrics(), **result}
        self.metrics.append(row)
        if self.node_log is not None:
            local = (self._validate(self.algorithm.eval_model(), shard=False, val=self.local_val)
                     if self.local_val is not None else {"val_loss": float("nan"), "val_acc": float("nan")})
            self.node_log.append({**row, "train_acc": int(self.train_correct) / max(self.train_seen, 1),
                                  "val_loss": local["val_loss"], "val_acc": local["val_acc"],
                                  "test_loss": result["val_loss"], "test_acc": result["val_acc"]})
        self.train_correct.zero_()
        self.train_seen = 0
        self.loss_sum.zero_()
        self.loss_nonfinite.zero_()
        self.loss_count = 0
        log.info("epoch %d/%d step %d  train_loss %.4f  val_loss %.4f  val_acc %.4f  consensus_acc %.4f  "
                 "consensus_dist %.3g  lr %.4g  (%.1f s)", self.epoch, self.config.epochs, self.step, train_loss,
                 result["val_loss"], result["val_acc"], result["consensus_val_acc"],
                 result["consensus_distance"], row["lr"], row["wall_time_s"])
