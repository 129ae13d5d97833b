"""Helpers for tests: run the real command line in subprocesses, read its outputs."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[1]


def installed_program(name: str) -> Optional[str]:
    """The program ``name`` that this Python's packages installed (beside the interpreter, e.g. a
    virtual environment's bin/: the console script, the MPICH wheel's mpiexec), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def in_ci() -> bool:
    """True on a CI machine: ``CI`` is set to anything but empty, 0, false or no (``.ci/run`` sets it)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Skip a test whose component cannot exist on this machine; under CI fail instead, so a
    broken CI machine never hides real-launcher tests behind skips."""
    if in_ci():
        pytest.fail(f"CI is set, so this is a failure, not a skip: {reason}", pytrace=False)
    pytest.skip(reason)


def child_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The test process's environment without launcher variables, one thread per rank."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_", "MPI_LOCAL", "TORCHELASTIC_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                         "MASTER_ADDR", "MASTER_PORT", "CROSSOVER_SGD_LAUNCHER")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run(args: Sequence[str], *, timeout: float = 300, env: Optional[Dict[str, str]] = None,
        cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run a command to completion (bounded by ``timeout``), capturing text output."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          env=env or child_env(), cwd=cwd or ROOT)


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m crossover_sgd ARGS``."""
    return run([sys.executable, "-m", "crossover_sgd", *args], **kwargs)


def read_metrics(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _environ(pid_dir: Path) -> Optional[Dict[str, str]]:
    try:
        raw = (pid_dir / "environ").read_bytes()
        state = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # gone, or not ours to read
        return None
    if state == "Z":
        return None
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def marked_processes(marker: str) -> Dict[int, Dict[str, str]]:
    """pid -> environment of the live processes whose environment has CROSSOVER_SGD_TEST_MARKER=marker."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            env = _environ(entry)
            if env is not None and env.get("CROSSOVER_SGD_TEST_MARKER") == marker:
                found[int(entry.name)] = env
    return found


def kill_marked(marker: str) -> Dict[int, Dict[str, str]]:
    """Kill (by pid) the marked processes still alive and return them: a test leaves none."""
    alive = marked_processes(marker)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


def design_example(path: Path) -> Dict[str, object]:
    """Execute the worked example of ``docs/design.md`` (the first python block after "How to add
    an algorithm") and return its namespace."""
    text = path.read_text()
    section = text[text.index("## How to add an algorithm"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("design_example")  # a real module: dataclasses look their class up there
    sys.modules[module.__name__] = module
    exec(compile(code, f"{path}:how-to-add-an-algorithm", "exec"), module.__dict__)
    return module.__dict__
