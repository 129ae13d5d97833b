"""Checkpoints: one file per rank per saved step, published by a ``latest.json`` marker.

Layout under ``OUT/checkpoints/``::

    step00000120/rank0.pt ... rank{n-1}.pt    every trainer's full training state at step 120
    latest.json                               {"step": 120, "world_size": n, "ranks": [...]}  (written last)

Each file is written atomically; the first trainer writes ``latest.json`` only after every
trainer has saved (a barrier), then removes older step folders. (An algorithm without collectives
over its trainers publishes nothing: each trainer keeps its own latest file.) A run killed at any moment therefore resumes from
a complete, consistent step. Loading checks the format tag and that the run matches.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from crossover_sgd.atomic import atomic_write, atomic_write_json
from crossover_sgd.errors import ConfigError

__all__ = ["FORMAT", "save_checkpoint", "publish_checkpoint", "published_checkpoint", "own_checkpoint", "load_checkpoint",
           "prune_own_checkpoints", "has_checkpoint", "drop_partial_steps", "complete_steps", "step_of"]

FORMAT = "crossover-sgd-checkpoint"
VERSION = 1
#: Fields that must agree between a checkpoint and the run that resumes it.
MUST_MATCH = ("world_size", "algorithm", "model", "dataset", "batch_size", "local_itr")


def _step_dir(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step{step:08d}"


def save_checkpoint(out: Path, rank: int, step: int, state: Dict[str, Any]) -> Path:
    """Write this rank's state for ``step``; call :func:`publish_checkpoint` after a barrier."""
    path = _step_dir(out, step) / f"rank{rank}.pt"
    atomic_write(path, lambda handle: torch.save({"format": FORMAT, "version": VERSION, **state}, handle))
    return path


def publish_checkpoint(out: Path, step: int, world_size: int, ranks: Optional[Sequence[int]] = None) -> None:
    """The first trainer, once every trainer (``ranks``, default all) has saved ``step``: point
    ``latest.json`` at it, drop older ones."""
    marker = {"step": step, "world_size": world_size}
    if ranks is not None and list(ranks) != list(range(world_size)):
        marker["ranks"] = list(ranks)
    atomic_write_json(out / "checkpoints" / "latest.json", marker)
    keep = _step_dir(out, step).name
    for old in (out / "checkpoints").glob("step*"):
        if old.is_dir() and old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def published_checkpoint(out: Path, world_size: int) -> Path:
    """The step folder ``latest.json`` points at, checked against ``world_size`` and complete."""
    marker = out / "checkpoints" / "latest.json"
    try:
        published = json.loads(marker.read_text())
        step = int(published["step"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{{resume}}: {marker} is missing or unreadable") from None
    saved_world = published.get("world_size")
    if saved_world is not None and saved_world != world_size:  # the same line on every rank
        raise ConfigError(f"{{resume}}: checkpoint {marker} was written with world_size={saved_world!r}, "
                          f"but this run has world_size={world_size!r}")
    folder = _step_dir(out, step)
    missing = [r for r in published.get("ranks", range(world_size)) if not (folder / f"rank{r}.pt").is_file()]
    if missing:
        raise ConfigError(f"{{resume}}: checkpoint {folder} lacks the files of rank(s) {missing}")
    return folder


def step_of(folder: Path) -> Optional[int]:
    """The step of a ``step*`` folder (None for another name)."""
    try:
        return int(folder.name[len("step"):]) if folder.name.startswith("step") else None
    except ValueError:
        return None


def complete_steps(out: Path, ranks: Sequence[int]) -> List[int]:
    """The saved steps whose folder holds a file of every rank of ``ranks``."""
    return sorted(step for folder in (out / "checkpoints").glob("step*")
                  if folder.is_dir() and (step := step_of(folder)) is not None
                  and all((folder / f"rank{r}.pt").is_file() for r in ranks))


def has_checkpoint(out: Path, ranks: Sequence[int]) -> bool:
    """A published checkpoint, or a complete step (the families that publish none), is in ``out``."""
    return (out / "checkpoints" / "latest.json").is_file() or bool(complete_steps(out, ranks))


def drop_partial_steps(out: Path, ranks: Sequence[int]) -> None:
    """Remove the step folders after the last good step (the published one, else the newest
    complete one): saves that did not complete."""
    try:
        good: Optional[int] = int(json.loads((out / "checkpoints" / "latest.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        good = max(complete_steps(out, ranks), default=None)
    if good is None:
        return
    for folder in (out / "checkpoints").glob("step*"):
        step = step_of(folder)
        if folder.is_dir() and step is not None and step > good:
            shutil.rmtree(folder, ignore_errors=True)


def prune_own_checkpoints(out: Path, rank: int, step: int) -> None:
    """Remove this rank's files of steps before ``step`` (and step folders left empty)."""
    keep = _step_dir(out, step).name
    for old in (out / "checkpoints").glob("step*"):
        if old.is_dir() and old.name < keep:
            (old / f"rank{rank}.pt").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                old.rmdir()


def own_checkpoint(out: Path, rank: int) -> Path:
    """The newest step folder holding ``rank``'s file (algorithms that publish no steps)."""
    steps = [step for folder in (out / "checkpoints").glob("step*")
             if (step := step_of(folder)) is not None and (folder / f"rank{rank}.pt").is_file()]
    if not steps:
        raise ConfigError(f"{{resume}}: {out} holds no checkpoint of rank {rank} (checkpoints/step*/rank{rank}.pt)")
    return _step_dir(out, max(steps))


def load_checkpoint(out: Path, rank: int, expected: Dict[str, Any], map_location: torch.device,
                    own: bool = False) -> Dict[str, Any]:
    """This rank's state of the latest published step (``own``: of this rank's newest file, for
    algorithms without collectives over their trainers); ConfigError if missing, broken or foreign."""
    folder = own_checkpoint(out, rank) if own else published_checkpoint(out, expected["world_size"])
    path = folder / f"rank{rank}.pt"
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ConfigError(f"{{resume}}: checkpoint {path} is truncated or not a torch file "
                          f"({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{{resume}}: {path} is not a crossover-sgd checkpoint")
    if state.get("version") != VERSION:
        raise ConfigError(f"{{resume}}: {path} has checkpoint version {state.get('version')}, "
                          f"this crossover-sgd reads version {VERSION}")
    for key in MUST_MATCH:
        if state.get(key) != expected[key]:
            raise ConfigError(f"{{resume}}: checkpoint {path} was written with {key}={state.get(key)!r}, "
                              f"but this run has {key}={expected[key]!r}")
    return state
