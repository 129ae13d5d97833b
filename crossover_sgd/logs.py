"""Logging setup: rank-tagged lines on stderr, and a plain log file on rank 0."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

__all__ = ["setup_logging", "add_log_file"]

_FORMAT = "%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s"


def setup_logging(rank: int, level: str = "INFO", every_rank: bool = False) -> None:
    """Rank 0 (``every_rank``: this rank whatever its number) logs at ``level``; other ranks log
    warnings and errors only."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT.format(rank=rank), "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level.upper() if rank == 0 or every_rank else logging.WARNING)


def add_log_file(path: Path, rank: int) -> Optional[logging.Handler]:
    """Append this process's log lines to ``path`` (plain lines, no progress bars)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT.format(rank=rank), "%Y-%m-%d %H:%M:%S"))
    logging.getLogger().addHandler(handler)
    return handler
