"""The heartbeat thread's lifecycle: it beats into a real TCPStore, and closing it joins the thread,
so a process exits cleanly right after a run (regression: a daemon thread still inside a store
call when Python finalized aborted a finished run with "terminate called without an active
exception")."""

from __future__ import annotations

import sys
import textwrap
import time
from datetime import timedelta

import torch.distributed as dist

from support import run
from crossover_sgd.runtime.watchdog import Heartbeat


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
