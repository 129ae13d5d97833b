"""The parameter-server family's records: one CSV per role (a row per push of a worker, a row per
aggregation of a shard), appended and flushed row by row (a run that dies keeps every row written
so far; the file is never rewritten), and the schedules of the server learning rate and of the
compensation step."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

__all__ = ["RowLog", "SCHEDULES", "scheduled", "WORKER_COLUMNS", "SHARD_COLUMNS"]

#: A worker's row per push: ``latency_s`` from its push to the reply, ``wait_s`` the part of it the
#: worker spent blocked (not computing), ``train_s`` its computing time since the previous push.
WORKER_COLUMNS = ("push", "k", "final", "train_loss", "latency_s", "wait_s", "train_s", "gamma", "bytes_sent",
                  "bytes_recv", "elapsed_s")
#: A shard's row per aggregation; shard 0 adds the server model's test loss and accuracy (every
#: ``--ps-eval-every`` aggregations, NaN between).
SHARD_COLUMNS = ("round", "global_iterations", "pushes", "k_sum", "lr_ps", "test_loss", "test_acc", "bytes_recv",
                 "bytes_sent", "elapsed_s")

#: Schedules of ``--ps-lr`` and ``--losp-gamma`` over training progress p in [0, 1] (the
#: original's ``get_ps_lr(iteration, all_iterations)`` / ``get_worker_gamma``).
SCHEDULES = ("constant", "linear", "cosine")


def scheduled(value: float, schedule: str, progress: float) -> float:
    """``value`` at ``progress`` (clamped to [0, 1]): constant, linear to 0, or cosine to 0."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return value
    if schedule == "linear":
        return value * (1.0 - p)
    if schedule == "cosine":
        return value * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")


class RowLog:
    """A CSV with ``columns``, one row appended (and flushed) per :meth:`append`; ``append``: a
    resumed run goes on after the rows already in the file."""

    def __init__(self, path: Path, columns: Sequence[str], append: bool = False):
        self.path, self.columns, self.append_to = path, tuple(columns), append
        self.rows = 0
        self._file: Optional[Any] = None
        self._writer: Optional[Any] = None

    def append(self, row: Dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            resumed = self.append_to and self.path.is_file() and self.path.stat().st_size > 0
            self._file = open(self.path, "a" if resumed else "w", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._file, fieldnames=list(self.columns), lineterminator="\n")
            if not resumed:
                self._writer.writeheader()
        self._writer.writerow({k: _cell(row.get(k, float("nan"))) for k in self.columns})
        self._file.flush()
        self.rows += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _cell(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) and math.isfinite(value) else value
