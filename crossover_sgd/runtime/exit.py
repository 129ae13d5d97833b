"""Ending a process that ran a distributed job, without Python's interpreter shutdown.

When Python finalizes, threads of torch.distributed's C++ side (Gloo workers, store clients) may
still be alive; one that takes the GIL back during finalization is ended with ``pthread_exit``,
and unwinding through C++ frames aborts the process ("terminate called without an active
exception", exit code -6) after a run that succeeded. CI saw this about once in several hundred
multi-rank runs. So a process that started a process group ends with ``os._exit`` once its
outputs are flushed (and MPI finalized, if mpi4py initialized it: ``mpirun`` expects that). Every
output file is already complete by then: they are written atomically or flushed per row.

The local launcher (``--nproc N``) ends the same way once its ranks have: its interpreter shutdown
(the teardown of torch's modules) would only cost it CPU, about half a second per launch.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

__all__ = ["mark_distributed", "exit_process"]

_started_distributed = False


def mark_distributed() -> None:
    """Record that this process started a torch.distributed process group (or launches the local
    ranks of one): :func:`exit_process` then ends it with ``os._exit``."""
    global _started_distributed
    _started_distributed = True


def exit_process(code: int) -> NoReturn:
    """Exit with ``code``: at once (``os._exit``) after a distributed run, normally otherwise."""
    if not _started_distributed:
        raise SystemExit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    _finalize_mpi()
    os._exit(code)


def _finalize_mpi() -> None:
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()
