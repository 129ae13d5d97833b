"""What every figure of :mod:`crossover_sgd.plotting` shares: matplotlib on the Agg backend (or
one error line saying how to get it), the atomic PNG write, the naming of per-run files and small
helpers over the points drawn."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import List, Sequence, Tuple

from crossover_sgd.errors import ConfigError

__all__ = ["PLOT_EXTRA_HINT", "pyplot", "save_figure", "per_run_file", "file_part", "finite", "positive_data"]

PLOT_EXTRA_HINT = "pip install 'crossover-sgd[plot]' (or pip install matplotlib)"


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or a ConfigError saying how to get it."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(f"plots need matplotlib, which is not installed: {PLOT_EXTRA_HINT}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Lay ``fig`` out, write it to ``path`` as a PNG atomically (no half-written file), close it."""
    from crossover_sgd.atomic import atomic_write

    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=dpi))
    pyplot().close(fig)
    return Path(path)


def per_run_file(prefix: str, name: str, count: int, taken: set) -> str:
    """``<prefix>.png`` for the only run, ``<prefix>_<name>.png`` when ``count`` runs are drawn
    (``taken``: the names given so far, which a new one never repeats)."""
    stem = prefix if count == 1 else f"{prefix}_{file_part(name)}"
    while stem in taken:  # two names that differ only in characters a file name avoids
        stem += "_"
    taken.add(stem)
    return f"{stem}.png"


def file_part(name: str) -> str:
    """``name`` with what a file name should not hold replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"


def finite(xs: Sequence[float], ys: Sequence[float], scale: float = 1.0) -> Tuple[List[float], List[float]]:
    """The points of ``(xs, ys * scale)`` where both are finite numbers."""
    pairs = [(x, y * scale) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    return [x for x, _ in pairs], [y for _, y in pairs]


def positive_data(ax) -> bool:
    """Whether a line of ``ax`` has a point above 0 (a log scale can show it)."""
    return any(any(y > 0 for y in line.get_ydata()) for line in ax.lines)
