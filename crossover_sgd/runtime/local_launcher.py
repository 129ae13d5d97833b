"""The local launcher: ``--nproc N`` starts N ranks of the same command on this machine.

Every child gets the torchrun-style variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) plus ``CROSSOVER_SGD_LAUNCHER=local``.
When one child fails, the others are stopped and the launcher exits with that child's code.
SIGINT/SIGTERM/SIGUSR1 received by the launcher are forwarded to every child; at the second
SIGINT/SIGTERM the children still running are killed (SIGKILL): a rank stuck in a collective
cannot honour the first. A launcher that is killed itself (SIGKILL, the OOM killer) takes its
ranks with it (Linux's parent-death signal): none is left waiting for its peers.

With ``emulate_nodes=M`` and ``link_rate=R`` the ranks run on an emulated cluster
(:mod:`crossover_sgd.runtime.emulation`): rank r inside node r // (N/M)'s network namespace, with
that placement in ``LOCAL_RANK``/``LOCAL_WORLD_SIZE``/``GROUP_RANK``, the rendezvous at node 0's
address and Gloo on the node's interface (``GLOO_SOCKET_IFNAME``); the ranks of one node talk over
its loopback, the nodes over their links of R bits per second. The cluster is removed when the
ranks have ended (also after a failure, Ctrl-C or SIGTERM).

Bad input and lost peers found inside the ranks are reported once: each child gets the write end
of a pipe (its number in ``CROSSOVER_SGD_ERROR_FD``) and writes its one-line error there instead
of on stderr (:func:`report_line`). The launcher prints the lowest rank's line, once, after the
ranks ended, and exits with that rank's code (2: bad input, 3: a lost peer, 4: the rank was cut
off from the rendezvous store) without a line of its own. Any other failure (a crash, a signal)
is announced with ``rank R exited with code C; stopping the other ranks``.

With ``tolerate_lost`` (a peer-to-peer run with ``--swap_timeout``) the ranks go on without a
rank that is killed, or that ends because it was cut off from the rendezvous store (code 4: a
network partition; the store lives in rank 0, so the side that still reaches it is the job): such
a rank is announced at once (its own line, or ``rank R exited with code C``, followed by ``the
other ranks go on without it (--swap_timeout)``), and the job's exit code is that of the other
ranks: 0 when every one of them finished.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Union

from crossover_sgd.runtime.emulation import EmulatedCluster, plan_emulation
from crossover_sgd.runtime.launch import LOCAL_LAUNCHER_ENV, free_port

__all__ = ["launch_local", "strip_flag", "claim_error_channel", "report_line", "CONFIG_ERROR_EXIT",
           "PEER_FAILURE_EXIT", "STORE_LOST_EXIT", "ERROR_FD_ENV", "EMULATED_NODES_ENV", "LINK_RATE_ENV"]

log = logging.getLogger(__name__)
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
#: The exit code of bad input (ConfigError), here and in every rank.
CONFIG_ERROR_EXIT = 2
#: The exit code of a rank whose process group broke (a peer died or stopped answering).
PEER_FAILURE_EXIT = 3
#: The exit code of a rank cut off from the rendezvous store (no answer for longer than its timeout:
#: a network partition, or the store's host froze; :mod:`crossover_sgd.runtime.watchdog`).
STORE_LOST_EXIT = 4
#: Exit codes whose rank reports its own line (through the pipe, under this launcher).
_REPORTED = (CONFIG_ERROR_EXIT, PEER_FAILURE_EXIT, STORE_LOST_EXIT)
#: The variable naming a rank's end of its error pipe (set by the launcher, read once by the rank).
ERROR_FD_ENV = "CROSSOVER_SGD_ERROR_FD"
#: After a rank exited with CONFIG_ERROR_EXIT without a line in its pipe, how long the launcher
#: waits for a line from another rank (the one that reports an error every rank found) before
#: stopping the rest.
_SETTLE_S = 20.0
#: Set in every rank of an emulated cluster: its number of nodes, and the rate of every link (bits/s).
EMULATED_NODES_ENV = "CROSSOVER_SGD_EMULATED_NODES"
LINK_RATE_ENV = "CROSSOVER_SGD_LINK_RATE"
_claimed: Optional[int] = None


def claim_error_channel() -> Optional[int]:
    """In a rank started by :func:`launch_local`: the pipe to report a one-line error through
    (None elsewhere). The variable is removed at the first call, so that no process this rank
    starts mistakes an unrelated file descriptor of the same number for the pipe."""
    global _claimed
    text = os.environ.pop(ERROR_FD_ENV, None)
    if text is not None:
        try:
            fd = int(text)
            _claimed = fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None
        except (ValueError, OSError):
            _claimed = None
    return _claimed


def report_line(line: str, exit_code: int = CONFIG_ERROR_EXIT) -> None:
    """Report a one-line error: to the local launcher, which prints one line for all ranks, or on
    stderr (other launchers). ``exit_code`` is the code this rank is about to exit with: the
    launcher ranks the lines by it even when it stops the rank before the rank has exited."""
    line = " ".join(line.splitlines())
    channel = claim_error_channel()
    if channel is not None:
        try:
            os.write(channel, f"{exit_code}\t{line[:4000]}\n".encode())  # below PIPE_BUF: one atomic write
            return
        except OSError:
            pass
    print(line, file=sys.stderr, flush=True)


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


def _child_env(rank: int, nproc: int, port: int, cluster: Optional[EmulatedCluster] = None) -> dict:
    env = dict(os.environ)
    env.update(RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank),
               LOCAL_WORLD_SIZE=str(nproc), GROUP_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port))
    if cluster is not None:  # rank r on node r // (N/M), the rendezvous on node 0
        per_node = nproc // len(cluster.nodes)
        node = cluster.nodes[rank // per_node]
        env.update(LOCAL_RANK=str(rank % per_node), LOCAL_WORLD_SIZE=str(per_node), GROUP_RANK=str(node.index),
                   MASTER_ADDR=cluster.nodes[0].address, GLOO_SOCKET_IFNAME=node.interface,
                   # NCCL: the nodes are distinct hosts that talk over sockets on the node's interface
                   NCCL_SOCKET_IFNAME=node.interface, NCCL_HOSTID=node.namespace, NCCL_IB_DISABLE="1")
        env[EMULATED_NODES_ENV] = str(len(cluster.nodes))
        env[LINK_RATE_ENV] = str(cluster.rate_bits_per_s)
    env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # no C++ warning dumps from peers of a failed rank
    env[LOCAL_LAUNCHER_ENV] = "local"
    # N ranks share this machine's cores: one intra-op thread each unless the user says otherwise.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


def launch_local(nproc: int, command: Sequence[str], grace_s: float = 10.0, tolerate_lost: bool = False,
                 emulate_nodes: Optional[int] = None, link_rate: Union[str, int, None] = None) -> int:
    """Run ``command`` as ``nproc`` ranks; return 0 if all succeed, else the first failure's code.

    ``tolerate_lost``: the ranks go on without a peer that dies (a peer-to-peer run with
    ``--swap_timeout``): a rank killed by a signal, or cut off from the rendezvous store (exit
    code :data:`STORE_LOST_EXIT`), is announced, the others are left to finish, and the job
    succeeds if every other rank does.

    ``emulate_nodes`` and ``link_rate`` (both or neither): the ranks run on that many emulated
    nodes joined by links of that rate (bits per second, or text like ``1gbit``; see module doc)."""
    plan = plan_emulation(nproc, emulate_nodes, link_rate)
    if plan is None:
        return _launch(nproc, command, grace_s, tolerate_lost, None)
    with EmulatedCluster(plan.nodes, plan.rate_bits_per_s) as cluster:
        return _launch(nproc, command, grace_s, tolerate_lost, cluster)


def _launch(nproc: int, command: Sequence[str], grace_s: float, tolerate_lost: bool,
            cluster: Optional[EmulatedCluster]) -> int:
    port = free_port()
    children: List[subprocess.Popen] = []
    readers: List[int] = []
    try:
        with _Forwarding(children) as forwarding:
            for rank in range(nproc):
                read_end, write_end = os.pipe()
                os.set_blocking(read_end, False)
                readers.append(read_end)
                env = _child_env(rank, nproc, port, cluster)
                env[ERROR_FD_ENV] = str(write_end)
                enter: Optional[Callable[[], None]] = None
                if cluster is not None:
                    enter = cluster.nodes[rank // (nproc // len(cluster.nodes))].enter()
                try:
                    children.append(subprocess.Popen(list(command), env=env, pass_fds=(write_end,),
                                                     preexec_fn=_child_setup(enter)))
                finally:
                    os.close(write_end)  # the child holds its own copy
                forwarding.started(children[-1])
            return _supervise(children, readers, grace_s, tolerate_lost)
    finally:
        _stop(children, grace_s)
        for fd in readers:
            os.close(fd)


def _child_setup(enter: Optional[Callable[[], None]]) -> Callable[[], None]:
    """What a rank's process does between fork and exec: end with the launcher (Linux's parent-death
    signal: a launcher killed with SIGKILL, or by the OOM killer, cannot stop its ranks itself, and
    a rank waiting on its peers would otherwise stay forever), then ``enter`` its emulated node."""
    launcher = os.getpid()
    prctl = _libc_prctl()  # resolved here, in the parent: a forked child must not dlopen

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != launcher:  # the launcher died before the signal was set
                os._exit(128 + signal.SIGKILL)
        if enter is not None:
            enter()

    return setup


#: prctl(2)'s option: the signal this process gets when its parent thread ends.
_PR_SET_PDEATHSIG = 1


@functools.lru_cache(maxsize=None)
def _libc_prctl() -> Optional[Callable[..., int]]:
    """libc's ``prctl`` (None off Linux, where a rank outlives a killed launcher)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _drain(readers: Sequence[int], received: Dict[int, bytes]) -> None:
    """Append what each rank wrote to its error pipe so far."""
    for rank, fd in enumerate(readers):
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            received[rank] = received.get(rank, b"") + chunk


class _Forwarding:
    """While active, SIGINT/SIGTERM/SIGUSR1 go to every child: those started already and, replayed,
    those started later (a signal during the start is not lost). At the second SIGINT/SIGTERM the
    children are killed instead: a rank stuck in a collective (a lost peer, a cut link) cannot
    honour the first."""

    def __init__(self, children: Sequence[subprocess.Popen]):
        self.children = children
        self.sent: List[int] = []
        self._previous: Dict[int, object] = {}

    def __enter__(self) -> "_Forwarding":
        self._previous = {sig: signal.getsignal(sig) for sig in _FORWARDED}
        for sig in _FORWARDED:
            signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _on_signal(self, signum: int, _frame: object) -> None:
        interrupted = signum in _INTERRUPTS and any(sent in _INTERRUPTS for sent in self.sent)
        if interrupted:
            print("crossover-sgd: interrupted again: killing the ranks", file=sys.stderr, flush=True)
        self.sent.append(signal.SIGKILL if interrupted else signum)
        for child in self.children:
            self._send(child, self.sent[-1])

    def started(self, child: subprocess.Popen) -> None:
        """Send ``child`` (just started) the signals the others got before it existed."""
        for signum in self.sent:
            self._send(child, signum)

    @staticmethod
    def _send(child: subprocess.Popen, signum: int) -> None:
        if child.poll() is None:
            child.send_signal(signum)


def _supervise(children: Sequence[subprocess.Popen], readers: Sequence[int], grace_s: float,
               tolerate_lost: bool = False) -> int:
    failed: Optional[tuple] = None
    stopped = announced = False
    settle_until = 0.0
    received: Dict[int, bytes] = {}
    lost: Dict[int, int] = {}  # tolerated: rank -> its death's code
    while True:
        codes = [c.poll() for c in children]
        _drain(readers, received)
        if tolerate_lost:
            for rank, code in enumerate(codes):
                if code is not None and (code < 0 or code == STORE_LOST_EXIT) and rank not in lost:
                    lost[rank] = code
                    line = received.pop(rank, b"")
                    said = _parse_report(line)[1] if code == STORE_LOST_EXIT and line.strip() else \
                        f"crossover-sgd: rank {rank} exited with code {code}"
                    print(f"{said}; the other ranks go on without it (--swap_timeout)", file=sys.stderr, flush=True)
        bad = [(r, code) for r, code in enumerate(codes) if code not in (None, 0) and r not in lost]
        if bad and failed is None:
            failed = bad[0]
            if failed[1] in _REPORTED:  # bad input or a lost peer: the rank's own line says it all
                settle_until = time.monotonic() + _SETTLE_S
            else:  # a rank died without a line (a signal): the launcher says it, and the lines of
                _announce(failed)  # the ranks it stops (who then find their peer gone) say no more
                _stop(children, grace_s)
                stopped = announced = True
        # stop the rest once the lowest rank that may report has (ranks that find the same error
        # exit by themselves), or after the settle time (ranks waiting for the failed one)
        reported = received and all(codes[r] is not None for r in range(min(received)))
        if failed is not None and not stopped and (reported or time.monotonic() >= settle_until):
            _stop(children, grace_s)  # e.g. ranks still waiting for the failed one at the rendezvous
            stopped = True
        if all(code is not None for code in codes):
            break
        time.sleep(0.05)
    _drain(readers, received)
    reports = {r: _parse_report(received[r]) for r in sorted(received) if received[r].strip() and r not in lost}
    if reports and not announced:  # found alike by several ranks: said once; a rank's own bad input first
        first = (sorted(r for r, (code, _) in reports.items() if code == CONFIG_ERROR_EXIT) or sorted(reports))[0]
        print(reports[first][1], file=sys.stderr, flush=True)
        if failed is not None and failed[1] in _REPORTED and reports[first][0] in _REPORTED:
            failed = (first, reports[first][0])  # the code of the line printed (a rank cut off from the store
            # may end, with code 4, before rank 0 names it among the lost peers, with code 3)
    elif failed is not None and failed[1] in _REPORTED:
        _announce(failed)
    if failed is not None:
        code = failed[1]
        return code if code > 0 else 128 - code  # a signal death -> 128 + signal number
    return 0


def _parse_report(data: bytes) -> tuple:
    """(exit code the rank announced, its line) from what a rank wrote to its error pipe."""
    first = data.decode(errors="replace").strip().splitlines()[0]
    code, tab, line = first.partition("\t")
    return (int(code), line) if tab and code.lstrip("-").isdigit() else (None, first)


def _announce(failed: tuple) -> None:
    print(f"crossover-sgd: rank {failed[0]} exited with code {failed[1]}; stopping the other ranks",
          file=sys.stderr, flush=True)


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
