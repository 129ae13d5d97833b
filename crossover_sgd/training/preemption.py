"""Preemption: when the job is about to be ended, every rank stops after the same optimizer step.

A batch system warns a job before it ends it: Slurm sends the signal of ``--signal=B:USR1@120``
(the job script ``scripts/slurm/train.sbatch`` forwards it from the batch shell to the ranks), and
SIGTERM before SIGKILL at the time limit, on ``scancel`` or on preemption. Such a signal reaches
the ranks at different moments, or only some of them. So a signal only raises a flag in the rank
that got it, and the ranks agree on the flags: every ``every`` optimizer steps each rank starts a
non-blocking all-reduce (MAX) of its one-element flag and reads the result of the previous one.
Every rank reads the same value at the same step, so either all ranks stop after that step or none
does. The trainer then saves a checkpoint (the ``--stop-at-step`` path) and the run ends with
summary status ``"preempted"`` and exit code 0; ``--resume`` continues it exactly.

Cost. The flag is a CPU tensor reduced over Gloo: the default group when it is Gloo, else (NCCL) a
Gloo group made once for it, so the check never waits for the GPU. The all-reduce of step ``s``
runs in the background while step ``s + every`` computes; reading it costs nothing unless a rank is
a whole check interval behind the others (then the faster ranks wait for it, as they would at the
next collective of AllReduce-SGD; gossip ranks may drift up to ``every`` steps apart). Measured on
the default job (4 ranks on 2 CPU cores, ~20 ms steps): a blocking per-step all-reduce took 4-9 ms
per call, mostly waiting for the slowest rank (a global barrier per step, which gossip algorithms
exist to avoid; on a GPU it would also make the host wait for the device every step); this
overlapped check takes 0.4-0.7 ms per call, about 2 % of a step, and a vanishing share of the
0.1-10 s steps of the ResNet-50 recipes. So it runs every step by default. A request is acted on
one or two checks after the signal: seconds at most, well inside Slurm's warning time.

Handlers are installed on the main thread only (Python's rule), with ``siginterrupt(False)`` so a
signal does not interrupt blocking system calls in C++ code (collectives, file writes): they are
restarted, and the Python handler runs when control comes back to the interpreter. Once a stop is
agreed, further warning signals are ignored (a duplicate would otherwise kill a process that is
already saving its checkpoint and exiting). A signal that arrives before the handlers are
installed (while the process imports torch or loads data) still ends the process.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from crossover_sgd.runtime.process_group import DistContext

__all__ = ["Preemption", "PREEMPTION_SIGNALS"]

log = logging.getLogger(__name__)

#: The signals that ask a run to checkpoint and stop.
PREEMPTION_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preemption:
    """Signal handlers that request a stop, and the agreement of every rank on it."""

    def __init__(self, ctx: DistContext, every: int = 1, signals: Sequence[signal.Signals] = PREEMPTION_SIGNALS,
                 collectives: bool = True):
        """Agreement over the training group (``collectives=False``: each trainer stops alone)."""
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.world_size = ctx.train_size if collectives else 1  # the ranks that agree
        self.every, self.signals = every, tuple(signals)
        self.received: Optional[int] = None  # the first signal this rank got
        self.agreed = False  # set once every rank has agreed to stop
        self._group = None  # None: the default group (Gloo); else a Gloo group of the trainers for the flag
        if ctx.train_ranks is not None:
            self._group = ctx.train_control_group
        elif self.world_size > 1 and dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo", timeout=timedelta(seconds=ctx.timeout_s))
        self._pending: Optional[Tuple[object, torch.Tensor]] = None  # the check in flight
        self._previous: Dict[int, object] = {}

    def install(self) -> "Preemption":
        """Catch the preemption signals in this process (only possible on the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("not on the main thread: preemption signals are not caught")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
            signal.siginterrupt(sig, False)
        return self

    def _on_signal(self, signum: int, _frame) -> None:
        if self.received is None:  # only a flag: no logging (or anything else that locks) in a handler
            self.received = signum

    def should_stop(self, step: int) -> bool:
        """Called by every rank after optimizer step ``step``: True on every rank, or on none."""
        if self.agreed:
            return True
        if step % self.every:
            return False
        mine = 1.0 if self.received is not None else 0.0
        if self.world_size == 1:
            return self._agree(step) if mine else False
        previous, self._pending = self._pending, self._start(mine)
        if previous is None:
            return False
        work, flag = previous
        work.wait()
        return self._agree(step) if flag.item() > 0 else False

    def _start(self, value: float) -> Tuple[object, torch.Tensor]:
        flag = torch.full((1,), value)
        return dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group, async_op=True), flag

    def _agree(self, step: int) -> bool:
        self.agreed = True
        for sig in self._previous:  # already stopping: a duplicate signal must not kill us now
            signal.signal(sig, signal.SIG_IGN)
        if self.received is not None:
            log.warning("received %s: every rank checkpoints and stops after step %d",
                        signal.Signals(self.received).name, step)
        else:
            log.info("another rank received a preemption signal: every rank stops after step %d", step)
        return True

    def close(self) -> None:
        """Finish the check in flight (every rank has one) and put the previous handlers back
        (unless a stop was agreed: then the signals stay ignored until the process exits)."""
        if self._pending is not None:
            self._pending[0].wait()
            self._pending = None
        for sig, handler in self._previous.items():
            if not self.agreed:
                signal.signal(sig, handler)
        self._previous.clear()
