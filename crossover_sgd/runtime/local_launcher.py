"""The local launcher: ``--nproc N`` starts N ranks of the same command on this machine.

Every child gets the torchrun-style variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) plus ``CROSSOVER_SGD_LAUNCHER=local``.
When one child fails, the others are stopped and the launcher exits with that child's code.
SIGINT/SIGTERM/SIGUSR1 received by the launcher are forwarded to every child.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import List, Optional, Sequence

from crossover_sgd.runtime.launch import LOCAL_LAUNCHER_ENV, free_port

__all__ = ["launch_local", "strip_flag"]

log = logging.getLogger(__name__)
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def strip_flag(argv: Sequence[str], flag: str) -> List[str]:
    """Remove ``flag VALUE`` and ``flag=VALUE`` from an argument list."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


def _child_env(rank: int, nproc: int, port: int) -> dict:
    env = dict(os.environ)
    env.update(RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank),
               LOCAL_WORLD_SIZE=str(nproc), GROUP_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port))
    env[LOCAL_LAUNCHER_ENV] = "local"
    # N ranks share this machine's cores: one intra-op thread each unless the user says otherwise.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


def launch_local(nproc: int, command: Sequence[str], grace_s: float = 10.0) -> int:
    """Run ``command`` as ``nproc`` ranks; return 0 if all succeed, else the first failure's code."""
    port = free_port()
    children = [subprocess.Popen(list(command), env=_child_env(r, nproc, port)) for r in range(nproc)]
    previous = {sig: signal.getsignal(sig) for sig in _FORWARDED}

    def forward(signum, _frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    failed: Optional[tuple] = None
    try:
        while True:
            codes = [c.poll() for c in children]
            bad = [(r, code) for r, code in enumerate(codes) if code not in (None, 0)]
            if bad and failed is None:
                failed = bad[0]
                print(f"crossover-sgd: rank {failed[0]} exited with code {failed[1]}; stopping the other ranks",
                      file=sys.stderr)
                _stop(children, grace_s)
            if all(code is not None for code in codes):
                break
            time.sleep(0.05)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop(children, grace_s)
    if failed is not None:
        code = failed[1]
        return code if code > 0 else 128 - code  # a signal death -> 128 + signal number
    return 0


def _stop(children: Sequence[subprocess.Popen], grace_s: float) -> None:
    """Terminate running children, then kill what is left after ``grace_s`` seconds."""
    running = [c for c in children if c.poll() is None]
    for child in running:
        child.terminate()
    deadline = time.monotonic() + grace_s
    for child in running:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
