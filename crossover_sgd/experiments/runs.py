"""Training runs of the experiments: ``crossover-sgd train`` as a child process, one directory each.

A run directory records the flags that made it (:data:`RECORD_FILE`); :func:`ensure_run` reuses a
finished run made by the same flags, refuses one made by others, continues an interrupted one from
its checkpoint (``resume``) or starts it over, and kills a run that outlives its timeout.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from crossover_sgd.atomic import atomic_write_json
from crossover_sgd.errors import ConfigError
from crossover_sgd.flags import given_train_flags, train_config

__all__ = ["RECORD_FILE", "RunSettings", "ensure_run", "run_command", "tail", "check_train_args"]

log = logging.getLogger(__name__)

#: Environment variables of launchers: a training child must not think it was started by srun & co.
_LAUNCHER_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "MPI_LOCAL", "TORCHELASTIC_")
_LAUNCHER_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                   "MASTER_PORT", "CROSSOVER_SGD_LAUNCHER")
#: What a run directory records about the command that made it (compared on reuse).
RECORD_FILE = "experiment.json"


@dataclass
class RunSettings:
    """What every training run of an experiment shares: length, schedule, data, model, more flags, timeout."""

    epochs: int = 8
    warmup_epochs: float = 1.0
    lr_schedule: str = "cosine"
    dataset: str = "digits"
    model: Optional[str] = None  # None: train's default model of the dataset
    train_args: List[str] = field(default_factory=list)
    timeout_s: float = 1800.0


def _child_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_LAUNCHER_PREFIXES) and k not in _LAUNCHER_NAMES}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_command(command: List[str], log_path: Path, timeout_s: float) -> int:
    """Run ``command`` with its output in ``log_path``; on timeout SIGTERM it (the local launcher
    forwards it to its ranks), then kill it. Returns the exit code (124 on timeout)."""
    with open(log_path, "ab") as output:
        output.write(("$ " + shlex.join(command) + "\n").encode())
        output.flush()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=_child_env())
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            return 124
        except BaseException:  # Ctrl-C: stop the ranks too, then let the interrupt through
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait()
            raise


def tail(path: Path, lines: int = 8) -> str:
    """The last ``lines`` lines of a text file ('' when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _status(summary_path: Path) -> Optional[str]:
    return json.loads(summary_path.read_text()).get("status") if summary_path.is_file() else None


def ensure_run(run_dir: Path, flags: List[str], record: Mapping[str, Any], timeout_s: float, resume: bool = True
               ) -> Tuple[str, Optional[int]]:
    """Make sure the run of ``crossover-sgd train FLAGS --out RUN_DIR`` is finished. Returns (status,
    exit code or None when nothing ran); status: ``reused``, ``trained``, ``resumed`` (from the
    checkpoint of an interrupted run, with ``resume``) or ``failed``. ``record`` is stored beside
    the flags; a directory made with other flags is a ConfigError."""
    record_path, summary_path = run_dir / RECORD_FILE, run_dir / "summary.json"
    if record_path.is_file():
        recorded = json.loads(record_path.read_text()).get("flags")
        if recorded != flags:
            raise ConfigError(f"{run_dir} holds a run made with other settings ({shlex.join(recorded or [])}); "
                              f"use another --out, or delete that directory to redo it")
    if _status(summary_path) == "finished":
        return "reused", None
    resuming = resume and (run_dir / "checkpoints" / "latest.json").is_file()
    if run_dir.exists() and not resuming:
        shutil.rmtree(run_dir)  # an unfinished run with nothing to resume from
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record_path, {"flags": flags, **record})
    command = [sys.executable, "-m", "crossover_sgd", "train", *flags, "--out", str(run_dir)]
    code = run_command(command + (["--resume"] if resuming else []), run_dir / "launcher.log", timeout_s)
    status = _status(summary_path)
    if code != 0 or status != "finished":
        why = "timed out" if code == 124 else f"exit code {code}, status {status!r}"
        log.error("%s failed (%s); last lines of %s:\n%s", run_dir, why, run_dir / "launcher.log",
                  tail(run_dir / "launcher.log"))
        return "failed", code
    return ("resumed" if resuming else "trained"), code


def check_train_args(text: str, *head: str, owned: Sequence[str] = ()) -> None:
    """``--train-args`` are flags of ``crossover-sgd train``: refuse bad ones before any run starts.
    ``head``: the experiment's own ``train`` flags (e.g. ``--dataset X``), checked first, then with them.
    ``owned``: flags the experiment gives each run itself (any values; ``--out`` and ``--resume``
    always): set again in ``--train-args`` they would silently replace the experiment's design
    (the last flag wins), so they are refused."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"--train-args {text!r} is not a valid command line: {exc}") from None
    if head:
        train_config(list(head))  # its errors name the experiment's flag (the same as train's)
    try:
        train_config([*head, *argv])
        given = given_train_flags(argv)
    except ConfigError as exc:
        raise ConfigError(f"--train-args {text!r}: {exc}") from None
    taken = sorted(set(given) & set(given_train_flags([*head, *owned, "--out", "-", "--resume"])))
    if taken:
        names = " ".join(given[dest] for dest in taken)
        raise ConfigError(f"--train-args {text!r}: {names} is set by the experiment itself for every run (it would "
                          f"replace the experiment's design); remove it from --train-args and use the experiment's "
                          f"own flags")
