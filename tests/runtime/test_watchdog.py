"""The heartbeat thread's lifecycle: it beats into a real TCPStore, and closing it joins the thread,
so a process exits cleanly right after a run (regression: a daemon thread still inside a store
call when Python finalized aborted a finished run with "terminate called without an active
exception")."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from support import run
from crossover_sgd.runtime.launch import free_port
from crossover_sgd.runtime.process_group import DistContext
from crossover_sgd.runtime.watchdog import Heartbeat
from crossover_sgd.training.run import start_heartbeat


def _master(port: int = 0) -> dist.TCPStore:
    return dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False,
                         timeout=timedelta(seconds=10))


def test_heartbeat_counts_up_and_close_joins_the_thread():
    store = _master()
    beat = Heartbeat("127.0.0.1", store.port, rank=0, world_size=1, interval=0.01).start()
    first = store.add("crossover_sgd/hb/0", 0)
    time.sleep(0.2)
    later = store.add("crossover_sgd/hb/0", 0)
    assert later > first, (first, later)
    beat.close()
    assert not beat._thread.is_alive()
    stopped = store.add("crossover_sgd/hb/0", 0)
    time.sleep(0.1)
    assert store.add("crossover_sgd/hb/0", 0) == stopped  # no beat after close()


SCRIPT = textwrap.dedent("""
    import sys, time
    from datetime import timedelta
    import torch.distributed as dist
    from crossover_sgd.runtime.watchdog import Heartbeat
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    beat = Heartbeat("127.0.0.1", store.port, rank=0, world_size=1, interval=1e-5).start()
    time.sleep(0.05)
    beat.close()
""")


def test_process_exits_cleanly_after_close_while_beating_fast():
    # With a 10 us interval the thread is almost always inside a store call at exit: without the
    # join in close() this aborts (exit -6) nearly every time.
    for _ in range(3):
        result = run([sys.executable, "-c", SCRIPT], timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "terminate called" not in result.stderr


def test_heartbeat_waits_for_a_slow_store_and_then_uses_short_operation_timeouts():
    port = free_port()
    servers = []
    late = threading.Timer(1.5, lambda: servers.append(_master(port)))  # the store's host is slow to answer
    late.start()
    try:
        beat = Heartbeat("127.0.0.1", port, rank=0, world_size=1, connect_timeout=30.0, op_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(dist.DistError):
            beat._store.get("crossover_sgd/never-set")  # an operation gives up after op_timeout, not 30 s
        assert time.monotonic() - started < 10
    finally:
        late.join()


def test_a_run_goes_on_without_heartbeat_when_the_store_cannot_be_reached(monkeypatch, caplog):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))  # nothing listens there
    ctx = DistContext(rank=1, world_size=2, local_rank=1, local_size=2, node_id=0, device=torch.device("cpu"),
                      backend="gloo", launcher="local", timeout_s=1.0)
    with caplog.at_level(logging.WARNING):
        assert start_heartbeat(ctx) is None
    assert "rank 1: no heartbeat" in caplog.text


_STORE_HOST = """
import time
from datetime import timedelta
import torch.distributed as dist
store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=10))
print(store.port, flush=True)
time.sleep(120)
"""


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("fault", ["freeze", "kill"])
def test_a_store_that_stops_answering_is_waited_for_within_bounds_and_the_watchdog_says_so(fault):
    """A store host frozen (SIGSTOP: nothing answers, as across a cut link) or killed (its
    connection closes). Either way a reading of a peer's heartbeat returns None within
    ``op_timeout`` (a TCPStore ``add`` alone would wait for good). Frozen: the watchdog reports
    the lost store once a beat has gone unanswered for its limit, and the store answers again
    once it runs (SIGCONT). Killed: the store's host is gone for every rank; the watchdog stays
    quiet (the beating thread ends on the refused beat)."""
    from support import child_env

    host = subprocess.Popen([sys.executable, "-c", _STORE_HOST], stdout=subprocess.PIPE, text=True, env=child_env())
    beat = None
    try:
        port = int(host.stdout.readline())
        lost, reasons = threading.Event(), []
        beat = Heartbeat("127.0.0.1", port, rank=1, world_size=2, interval=0.1, op_timeout=0.5)
        beat.start().watch(1.0, lambda reason: (reasons.append(reason), lost.set()))
        assert beat.staleness(0) == 0.0 and beat.reachable
        if fault == "freeze":
            os.kill(host.pid, signal.SIGSTOP)
            while _state(host.pid) != "T":  # bounded: the kernel stops it at once
                threading.Event().wait(0.01)
        else:
            host.kill()
            host.wait(timeout=30)
        started = time.monotonic()
        assert beat.staleness(1) is None  # a first reading: a call to the store, given up on
        assert time.monotonic() - started < 0.5 + 3.0  # op_timeout, and slack for a loaded machine
        assert not beat.reachable and beat.staleness(0) is None  # not asked again while unanswered
        if fault == "freeze":
            assert lost.wait(timeout=10), "the watchdog did not report the frozen store"
            assert reasons == [f"lost the rendezvous store on rank 0 (127.0.0.1:{port}, unreachable): no answer for "
                               f"{reasons[0].split('no answer for ')[1].split(' s')[0]} s (limit 1 s); this rank is cut "
                               "off from it by the network, or its host froze, and cannot rendezvous with anybody: "
                               "it stops here"], reasons
            os.kill(host.pid, signal.SIGCONT)
            assert beat._store._late.done.wait(timeout=10)  # the call in flight is answered at last
            assert beat.reachable and beat._store.add("crossover_sgd/hb/0", 0) == 0
        else:
            beat._thread.join(timeout=10)
            assert not beat._thread.is_alive()  # the refused beat ended it
            assert not lost.wait(timeout=1.0 + 3 * 0.1), reasons
    finally:
        if beat is not None:
            beat.close()
        os.kill(host.pid, signal.SIGCONT) if host.poll() is None else None
        host.kill()
        host.wait()
