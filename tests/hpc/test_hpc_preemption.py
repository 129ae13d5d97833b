"""The preemption handler in this process, with real signals (the multi-rank agreement and the
whole checkpoint-requeue-resume cycle run under real Slurm in test_hpc_slurm.py)."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from crossover_sgd.runtime.process_group import DistContext
from crossover_sgd.training.preemption import PREEMPTION_SIGNALS, Preemption

pytestmark = pytest.mark.slow

ONE_RANK = DistContext(rank=0, world_size=1, local_rank=0, local_size=1, node_id=0, device=torch.device("cpu"),
                       backend="gloo", launcher="single", timeout_s=10.0)


@pytest.fixture
def own_handlers():
    """Handlers of this test process for the preemption signals, restored afterwards."""
    seen = []
    mine = {sig: (lambda signum, _frame: seen.append(signum)) for sig in PREEMPTION_SIGNALS}
    previous = {sig: signal.signal(sig, handler) for sig, handler in mine.items()}
    yield mine, seen
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", PREEMPTION_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_stops_the_run_and_later_ones_are_ignored(own_handlers, sig):
    mine, seen = own_handlers
    preemption = Preemption(ONE_RANK).install()
    assert preemption.should_stop(1) is False
    os.kill(os.getpid(), sig)  # handled (in this main thread) before kill returns to Python code
    assert preemption.received == sig
    assert preemption.should_stop(2) is True
    assert preemption.should_stop(3) is True  # once agreed, it stays agreed
    # the run is saving its checkpoint now: a duplicate warning must not kill it
    assert all(signal.getsignal(s) == signal.SIG_IGN for s in PREEMPTION_SIGNALS)
    os.kill(os.getpid(), sig)
    preemption.close()
    assert all(signal.getsignal(s) == signal.SIG_IGN for s in PREEMPTION_SIGNALS)  # until exit
    assert seen == []  # the previous handlers never saw the signals


def test_without_a_signal_nothing_stops_and_close_restores_the_handlers(own_handlers):
    mine, seen = own_handlers
    preemption = Preemption(ONE_RANK).install()
    assert all(signal.getsignal(s) == preemption._on_signal for s in PREEMPTION_SIGNALS)
    assert not any(preemption.should_stop(step) for step in range(1, 50))
    preemption.close()
    assert all(signal.getsignal(s) is mine[s] for s in PREEMPTION_SIGNALS)
    os.kill(os.getpid(), signal.SIGUSR1)
    assert seen == [signal.SIGUSR1]


def test_the_flag_is_checked_every_n_steps_only(own_handlers):
    preemption = Preemption(ONE_RANK, every=3).install()
    os.kill(os.getpid(), signal.SIGUSR1)
    assert [preemption.should_stop(step) for step in (1, 2)] == [False, False]
    assert preemption.should_stop(3) is True
    preemption.close()
    with pytest.raises(ValueError, match="every must be >= 1"):
        Preemption(ONE_RANK, every=0)
