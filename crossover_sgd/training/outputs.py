"""What a run writes to ``--out``: per-rank metrics CSV, ``config.json``, ``summary.json``.

Every file is written atomically (a reader sees the previous version or the new one).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from crossover_sgd.algorithms.registry import metric_columns
from crossover_sgd.atomic import atomic_write_text
from crossover_sgd.config import TrainConfig
from crossover_sgd.errors import ConfigError

__all__ = ["METRIC_COLUMNS", "METRIC_DEFAULTS", "MetricsLog", "TensorBoardLog", "check_out_dir", "default_out_dir", "RUN_MARKERS"]

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


def check_out_dir(out: Path, resume: bool) -> None:
    """Refuse to write into a directory that holds another run, unless resuming it."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{{out}} {out} exists and is not a directory")
    held = [m for m in RUN_MARKERS if (out / m).exists()] + [p.name for p in out.glob("metrics_rank*.csv")]
    if held and not resume:
        raise ConfigError(f"{{out}} {out} already holds a run ({held[0]}): pass {{resume}} to continue it, "
                          "or choose another directory")
    if resume and not (out / "checkpoints" / "latest.json").is_file():
        raise ConfigError(f"{{resume}}: {out} holds no checkpoint to resume from "
                          "(expected checkpoints/latest.json)")


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
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, text.getvalue())
