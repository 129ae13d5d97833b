"""What a run writes to ``--out``: per-rank metrics CSV, ``config.json``, ``summary.json``.

Every file is written atomically (a reader sees the previous version or the new one).

The run directory (:class:`RunDirectory`): checked up front, with the rest of the input, by
:func:`check_out_dir` (another run in it, a file in its place, and whether it can be created and
written: a probe that leaves nothing behind), then created once every rank has checked its input.
A write below it that fails later (a full disk after some epochs, a filesystem remounted
read-only) ends the rank with one line naming ``--out``, the file and the reason, exit code 2; if
the directory then holds nothing of value, what this run created is removed again. *Of value*
means: a checkpoint (``checkpoints/latest.json`` or a rank's checkpoint file) or a finished run's
``summary.json``: a run that filled the disk after 3 epochs keeps its directory, checkpoints,
metrics and log, to be continued with ``--resume`` once there is space (only unpublished,
partial checkpoint steps are removed). A directory with only ``config.json``, a log and metrics
rows of a run that cannot be resumed would block the next run with the same ``--out``
("already holds a run"): it is removed.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import logging
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from crossover_sgd.algorithms.registry import metric_columns
from crossover_sgd.atomic import (atomic_write_text, missing_ancestor, probe_directory, remove_created, user_path_error,
                                  within)
from crossover_sgd.config import TrainConfig
from crossover_sgd.training.checkpoint import drop_partial_steps, has_checkpoint
from crossover_sgd.errors import ConfigError

__all__ = ["METRIC_COLUMNS", "METRIC_DEFAULTS", "NODE_COLUMNS", "MetricsLog", "NodeLog", "TensorBoardLog", "check_out_dir", "default_out_dir",
           "RUN_MARKERS", "RunDirectory"]

#: The columns of every run's metrics: the generic ones, then each algorithm's own
#: (``Algorithm.metric_columns``; every run writes them, with the other algorithms' default values,
#: so that runs of different algorithms compare side by side).
METRIC_DEFAULTS: Dict[str, float] = metric_columns()
METRIC_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_acc", "consensus_val_acc",
                  "consensus_distance", "lr", "comm_bytes_sent", "comm_bytes_recv", "comm_seconds", "skipped_steps",
                  "wall_time_s") + tuple(METRIC_DEFAULTS)
#: Files or folders whose presence means a directory already holds a run.
RUN_MARKERS = ("summary.json", "config.json", "checkpoints")


def default_out_dir(config: TrainConfig) -> Path:
    """``runs/<tag or algorithm>-<date-time>``, made unique if it exists."""
    base = Path("runs") / f"{config.tag or config.algorithm}-{datetime.now():%Y%m%d-%H%M%S}"
    out, n = base, 1
    while out.exists():
        out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out


def check_out_dir(out: Path, resume: bool, own_checkpoints: bool = False) -> None:
    """Refuse to write into a directory that holds another run, unless resuming it, and a path
    that cannot be created and written (a read-only or full filesystem, ``/proc``, a file on the
    way): a probe that leaves no trace (:func:`crossover_sgd.atomic.probe_directory`)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{{out}} {out} exists and is not a directory: choose a new or empty directory")
    held = [m for m in RUN_MARKERS if (out / m).exists()] + [p.name for p in out.glob("metrics_rank*.csv")]
    if held and not resume:
        raise ConfigError(f"{{out}} {out} already holds a run ({held[0]}): pass {{resume}} to continue it, "
                          "or choose another directory")
    if resume and own_checkpoints and not any((out / "checkpoints").glob("step*/rank*.pt")):
        raise ConfigError(f"{{resume}}: {out} holds no checkpoint to resume from (expected checkpoints/step*/rank*.pt)")
    if resume and not own_checkpoints and not (out / "checkpoints" / "latest.json").is_file():
        raise ConfigError(f"{{resume}}: {out} holds no checkpoint to resume from "
                          "(expected checkpoints/latest.json)")
    try:  # a read-only or full filesystem, a path under /proc: refused before anything starts
        probe_directory(out)
    except OSError as exc:
        raise ConfigError(user_path_error("{out}", out, exc).message()) from None


class RunDirectory:
    """This run's output directory: created once every rank has checked its input; a failed
    write below it is one line naming ``--out``, and a directory holding nothing of value is
    removed again (see the module's docstring).

    Make it before any rank creates the directory (it records what existed), then run
    everything that writes in :meth:`writing`."""

    def __init__(self, out: Path, ranks: Sequence[int] = (0,)):
        """``ranks``: the ranks that write checkpoints (a step is complete with a file of each)."""
        self.out = Path(out)
        self.ranks = tuple(ranks)
        self.created = missing_ancestor(self.out)  # the topmost directory this run creates (None: it exists)
        self.before = set(os.listdir(self.out)) if self.created is None and self.out.is_dir() else None
        self._log: Optional[logging.Handler] = None

    def log_file(self, handler: Optional[logging.Handler]) -> None:
        """The run's log file: a line that cannot be written raises like any other output on the
        main thread (instead of logging's traceback on stderr for every line; other threads'
        lines are dropped), and the handler is closed when the run's outputs fail."""
        if handler is None:
            return
        self._log = handler

        def handle_error(record: logging.LogRecord) -> None:
            exc = sys.exc_info()[1]
            if isinstance(exc, OSError) and threading.current_thread() is threading.main_thread():
                raise exc

        handler.handleError = handle_error  # type: ignore[method-assign]

    def holds_value(self) -> bool:
        """A finished run's summary, a published checkpoint, or a complete step (a file of every
        rank: the families that publish none) is in the directory; a partial save is not."""
        return (self.out / "summary.json").is_file() or has_checkpoint(self.out, self.ranks)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Path]:
        """Create the directory; an OSError below it (or bad input found after all) ends the
        rank with one line; what it holds is kept if it is of value, else removed."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            yield self.out
        except (OSError, ConfigError) as exc:
            self._close_log()
            # a peer whose write failed removed the directory under this rank's write: that peer says why
            removed_by_peer = (len(self.ranks) > 1 and isinstance(exc, OSError) and exc.errno == errno.ENOENT
                               and self.created is not None and self.created.parent.is_dir()
                               and not self.out.exists())
            made = self.out.is_dir()  # else it could not even be created
            kept = made and self.holds_value()
            if kept:
                drop_partial_steps(self.out, self.ranks)
            else:
                remove_created(self.out, self.created, self.before)
            if removed_by_peer:
                error = ConfigError(f"{{out}} {self.out}: removed by another rank whose write failed")
                error.quiet = True  # the other rank reports the cause
                raise error from None
            if isinstance(exc, OSError) and self._is_ours(exc):
                raise user_path_error("{out}", self.out, exc, advice=self._advice(exc, kept, made)) from None
            raise
        except BaseException:
            # e.g. a lost peer: when that peer failed to write and removed the directory (it held
            # nothing of value), what this rank wrote since (a metrics row, its checkpoint file)
            # is a remnant: a directory this run created, without its config.json, of no value
            if (self.created is not None and self.out.is_dir() and not (self.out / "config.json").exists()
                    and not self.holds_value()):
                remove_created(self.out, self.created, self.before)
            raise

    def _is_ours(self, exc: OSError) -> bool:
        if exc.filename is None:
            return exc.errno in (errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC))
        try:
            failed = os.fsdecode(exc.filename)
        except TypeError:
            return False
        return within(failed, self.out) or within(self.out, failed)  # below it, or a parent made for it

    def _advice(self, exc: OSError, kept: bool, made: bool) -> str:
        full = exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
        if kept:
            fix = "free space on that filesystem" if full else "make it writable"
            return f"{fix}, then continue the run with {{resume}} (its checkpoints are kept)"
        fix = "free space on that filesystem or choose another one" if full else "choose a writable directory"
        if not made:
            return fix
        removed = ("the run directory was removed" if self.created is not None
                   else "what the run wrote there was removed")
        return f"{fix} ({removed}: it held no checkpoint)"

    def _close_log(self) -> None:
        if self._log is not None:
            logging.getLogger().removeHandler(self._log)
            with contextlib.suppress(OSError, ValueError):
                self._log.close()
            self._log = None


class TensorBoardLog:
    """Rank 0's metrics as TensorBoard scalars in ``OUT/tensorboard`` (``--tensorboard True``)."""

    def __init__(self, out: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("{tensorboard} True needs the tensorboard package: "
                              "pip install 'crossover-sgd[tensorboard]'") from None
        self._writer_class, self.path, self._writer = SummaryWriter, out / "tensorboard", None

    def add(self, row: Dict[str, float]) -> None:
        if self._writer is None:  # created on first use: nothing is written before training starts
            self._writer = self._writer_class(str(self.path))
        for key, value in row.items():
            if key not in ("epoch", "step"):
                self._writer.add_scalar(key, value, global_step=int(row["step"]))
        self._writer.flush()


class MetricsLog:
    """``metrics_rank{R}.csv``: one row per evaluation, rewritten atomically on every append."""

    def __init__(self, out: Path, rank: int, rows: Sequence[Dict[str, float]] = (),
                 tensorboard: Optional[TensorBoardLog] = None):
        self.path = out / f"metrics_rank{rank}.csv"
        self.rows: List[Dict[str, float]] = [dict(r) for r in rows]
        self.tensorboard = tensorboard

    def append(self, row: Dict[str, float]) -> None:
        self.rows.append({k: row.get(k, METRIC_DEFAULTS[k]) if k in METRIC_DEFAULTS else row[k]
                          for k in METRIC_COLUMNS})
        self.write()
        if self.tensorboard is not None:
            self.tensorboard.add(self.rows[-1])

    def write(self) -> None:
        _write_csv(self.path, METRIC_COLUMNS, self.rows)


#: The per-node CSV of a run whose nodes hold their own data (the peer-to-peer family's original
#: columns first: ``val`` is the node's own held-out data, ``test`` the shared validation set).
NODE_COLUMNS = ("epoch", "train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc",
                "comm_bytes_sent", "comm_bytes_recv", "comm_seconds", "wall_time_s", "live_neighbours",
                "dropped_neighbours")


class NodeLog:
    """``nodes/{node}.csv``: one row per evaluation of one node, rewritten atomically."""

    def __init__(self, out: Path, node: str):
        self.path = out / "nodes" / f"{node}.csv"
        self.rows: List[Dict[str, float]] = []

    def append(self, row: Dict[str, float]) -> None:
        self.rows.append({k: row.get(k, float("nan")) for k in NODE_COLUMNS})
        self.path.parent.mkdir(exist_ok=True)
        _write_csv(self.path, NODE_COLUMNS, self.rows)


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Dict[str, float]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
