"""A process that ran a distributed job ends with os._exit after flushing its outputs, so C++
threads still alive at interpreter shutdown cannot abort it (exit -6) after a successful run."""

from __future__ import annotations

import sys
import textwrap

import pytest

from support import run
from crossover_sgd.runtime import exit as process_exit

# A distributed process whose daemon thread sits in a GIL-releasing store call at exit: the
# situation that aborted finished runs in CI ("terminate called without an active exception").
SCRIPT = textwrap.dedent("""
    import sys, threading, time
    import torch
    import torch.distributed as dist
    from crossover_sgd.runtime.exit import exit_process
    from crossover_sgd.runtime.launch import LaunchInfo
    from crossover_sgd.runtime.process_group import init_distributed
    info = LaunchInfo(launcher="local", rank=0, world_size=1, local_rank=0, local_size=1, node_id=0)
    init_distributed(info, device=torch.device("cpu"), backend="gloo", timeout_s=30)
    master = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    client = dist.TCPStore("127.0.0.1", master.port, is_master=False, wait_for_workers=False)
    def beat():
        while True:
            client.add("k", 1)
    threading.Thread(target=beat, daemon=True).start()
    time.sleep(0.05)
    print("outputs flushed", flush=False)
    sys.stderr.write("error stream flushed")
    {ending}
""")


def test_a_distributed_process_exits_cleanly_through_exit_process():
    for _ in range(3):
        result = run([sys.executable, "-c", SCRIPT.format(ending="exit_process(7)")], timeout=120)
        assert result.returncode == 7, result.stderr[-2000:]
        assert "terminate called" not in result.stderr
        assert result.stdout.strip() == "outputs flushed" and "error stream flushed" in result.stderr


def test_without_a_process_group_exit_process_is_a_normal_exit(monkeypatch):
    # Earlier in-process tests may have started a process group or the local launcher in this
    # very process (both mark it): the os._exit path would end pytest itself (CI: exit 3 at 52 %).
    monkeypatch.setattr(process_exit, "_started_distributed", False)
    with pytest.raises(SystemExit) as info:
        process_exit.exit_process(3)
    assert info.value.code == 3
