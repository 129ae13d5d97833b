"""Tables of the experiments: statistics over seeds, and Markdown / CSV / JSON files."""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import logging
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from crossover_sgd.atomic import atomic_write_text
from crossover_sgd.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["spread", "markdown_table", "csv_text", "write_csv", "machine_description", "fmt_pct", "fmt_sci"]


def spread(values: Iterable[Optional[float]]) -> Dict[str, Optional[float]]:
    """Mean, sample standard deviation (0 for one value), min and max of the finite values."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": None, "std": None, "min": None, "max": None, "count": 0}
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(finite), "max": max(finite), "count": len(finite)}


def fmt_pct(stats: Mapping[str, Any]) -> str:
    """``mean ± std`` in percent (``-`` when there is no value)."""
    if not stats or stats.get("mean") is None:
        return "-"
    if stats.get("count", 1) > 1:
        return f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"
    return f"{100 * stats['mean']:.2f}"


def fmt_sci(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}e}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align_first_left: bool = True) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join(":---" if i == 0 and align_first_left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    """Rows as CSV text (columns: the given ones, else every key in first-seen order)."""
    if columns is None:
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(path, rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> None:
    atomic_write_text(path, csv_text(rows, columns))


def conclude(text: str, written: List[Any], plots: Optional[Callable[[], List[Any]]], failed: Sequence[str]) -> int:
    """The end of an experiment: draw its plots (``plots``; None: none asked), print the table
    and the files written, report failed runs; the exit code (1 if a run failed)."""
    if plots is not None:
        try:
            written = written + plots()
        except ConfigError as exc:  # matplotlib is optional: the tables stand on their own
            log.warning("no plots: %s", exc)
    print(text)
    for path in written:
        print(path)
    if failed:
        log.error("%d run(s) failed: %s (re-run the same command to retry them)", len(failed), ", ".join(failed))
        return 1
    return 0


def machine_description() -> Dict[str, Any]:
    """CPU count, platform and library versions of the machine the experiment ran on."""
    info: Dict[str, Any] = {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                            "platform": platform.platform(), "python": platform.python_version()}
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def as_rows(records: List[Dict[str, Any]], drop: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """Records without the keys in ``drop`` (e.g. long series that do not belong in a CSV)."""
    return [{k: v for k, v in r.items() if k not in drop} for r in records]
