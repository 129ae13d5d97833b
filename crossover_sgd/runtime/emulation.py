"""An emulated cluster on one machine: nodes as network namespaces joined by rate-limited links.

:class:`EmulatedCluster` creates, for a launcher of pid P and M nodes:

- one network namespace per node, ``csgd<P>n<i>`` (its ``lo`` up), holding the node's end of a
  veth pair, named ``eth0``, with the address ``10.<a>.<b>.<i+1>/24`` (``a.b``: P's low 16 bits);
- one "switch" namespace, ``csgd<P>sw``, holding a Linux bridge ``br0`` and the other end of every
  node's veth pair, ``p<i>``, attached to the bridge;
- both directions of every node's link shaped to the same rate with an HTB class (on the node's
  ``eth0`` and on its switch port ``p<i>``): the rate counts whole Ethernet frames, so TCP payload
  gets about 95 % of it. The bucket holds a whole GSO super-packet (64 KiB) or 1 ms at the rate,
  so a large packet never stalls the class; this kernel has no ``netem``, so the only added
  latency is the shaping queue's, at most :data:`QUEUE_S` seconds of traffic at the rate.

See docs/emulation.md.

Nothing is created in the caller's namespace, so the addresses cannot meet the host's networks.
Everything is removed when the context exits (normally, on an error, on Ctrl-C or SIGTERM); the
leftovers of a launcher that was killed outright (SIGKILL) are removed by the next cluster's start
(:func:`sweep_stale`: namespaces ``csgd<P>...`` whose pid P is no longer alive). Needs root and
iproute2's ``ip`` and ``tc``; without them :class:`~crossover_sgd.errors.ConfigError` says what
is missing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Union

from crossover_sgd.errors import ConfigError

__all__ = ["EmulatedCluster", "EmulatedNode", "EmulationPlan", "parse_rate", "plan_emulation", "check_available",
           "sweep_stale", "set_link", "list_namespaces", "node_namespace", "switch_namespace", "format_rate",
           "NODE_INTERFACE", "RATE_FORMS",
           "QUEUE_S"]

log = logging.getLogger(__name__)
#: The name of a node's interface inside its namespace (GLOO_SOCKET_IFNAME of its ranks).
NODE_INTERFACE = "eth0"
_BRIDGE = "br0"
_PREFIX = "csgd"
_NAME = re.compile(rf"^{_PREFIX}(\d+)(?:n(\d+)|sw)$")
#: The longest queue of the shaping qdisc, in seconds of traffic at the rate (the latency it may add).
QUEUE_S = 0.005
#: Examples of the accepted forms of a rate (bits per second, SI prefixes), for messages.
RATE_FORMS = "200mbit, 1gbit, 1Gbit/s, 500M, 10g or 100000000 (bits per second, SI prefixes k M G T)"
_RATE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(?:e(\d{1,2}))?\s*([kmgt]?)(?:bit|bits)?(?:/s)?$", re.IGNORECASE)
_SI = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "t": 10 ** 12}
MIN_RATE, MAX_RATE = 10 ** 5, 4 * 10 ** 11
_MAX_NODES = 250
_SYSTEM_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
_CLONE_NEWNET = 0x40000000


def parse_rate(text: Union[str, int]) -> int:
    """Bits per second from ``200mbit``, ``1gbit``, ``1Gbit/s``, ``500M``, ``10g`` or a plain
    number; ConfigError naming the value and the accepted forms otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        value: Optional[float] = float(text)
    else:
        match = _RATE.match(str(text).strip())
        value = None
        if match:
            value = float(match.group(1)) * 10 ** int(match.group(2) or 0) * _SI[match.group(3).lower()]
    if value is None or not MIN_RATE <= value <= MAX_RATE:
        why = "is not a rate" if value is None else "is out of range (100kbit .. 400gbit)"
        raise ConfigError(f"{{link_rate}} {text!r} {why}: use e.g. {RATE_FORMS}")
    return int(round(value))


def format_rate(bits_per_s: float) -> str:
    """``1gbit``, ``200mbit``, ``1.5gbit``: a rate as tc and :func:`parse_rate` read it."""
    for prefix, scale in (("g", 10 ** 9), ("m", 10 ** 6), ("k", 10 ** 3)):
        if bits_per_s >= scale:
            return f"{bits_per_s / scale:g}{prefix}bit"
    return f"{bits_per_s:g}bit"


@dataclass(frozen=True)
class EmulationPlan:
    """Checked settings of an emulated cluster: ``nodes`` nodes of ``ranks_per_node`` ranks."""

    nodes: int
    rate_bits_per_s: int
    ranks_per_node: int


def plan_emulation(nproc: Optional[int], nodes: Optional[int], rate: Union[str, int, None]) -> Optional[EmulationPlan]:
    """None when neither ``nodes`` nor ``rate`` is set; else the checked plan (ConfigError for a
    bad combination: both are needed, with ``nproc`` local ranks that ``nodes`` divides)."""
    if nodes is None and rate is None:
        return None
    given = ("{emulate_nodes} places" if rate is None else "{link_rate} places" if nodes is None
             else "{emulate_nodes} and {link_rate} place")
    if nproc is None:
        raise ConfigError(f"{given} the local ranks of {{nproc}} N on emulated nodes: add {{nproc}} N "
                          "(with {emulate_nodes} M and {link_rate} RATE), or drop them")
    if nodes is None:
        raise ConfigError("{link_rate} needs {emulate_nodes} M, the number of emulated nodes "
                          f"(a divisor of {{nproc}} {nproc})")
    if rate is None:
        raise ConfigError(f"{{emulate_nodes}} {nodes} needs {{link_rate}} RATE, the rate of every node's link: "
                          f"e.g. {RATE_FORMS}")
    if not 1 <= nodes <= min(nproc, _MAX_NODES) or nproc % nodes:
        raise ConfigError(f"{{emulate_nodes}} {nodes} is invalid with {{nproc}} {nproc}: use a divisor of {nproc} "
                          f"(1 .. {min(nproc, _MAX_NODES)}), the number of nodes that share the ranks equally")
    return EmulationPlan(nodes, parse_rate(rate), nproc // nodes)


def _tool(name: str) -> Optional[str]:
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SYSTEM_PATH])
    return shutil.which(name, path=path)


def check_available() -> None:
    """ConfigError naming what an emulated cluster lacks here: Linux, root, ``ip`` or ``tc``."""
    if not sys.platform.startswith("linux"):
        raise ConfigError(f"{{emulate_nodes}} needs Linux network namespaces (this is {sys.platform}): "
                          "run on Linux as root, or drop {emulate_nodes}")
    if os.geteuid() != 0:
        raise ConfigError("{emulate_nodes} needs root (it creates network namespaces and tc qdiscs): "
                          "run as root (e.g. sudo, or a container with CAP_NET_ADMIN and CAP_SYS_ADMIN), "
                          "or drop {emulate_nodes}")
    missing = [tool for tool in ("ip", "tc") if _tool(tool) is None]
    if missing:
        raise ConfigError(f"{{emulate_nodes}} needs iproute2's ip and tc, but {' and '.join(missing)} "
                          "cannot be found on PATH or in /usr/sbin, /sbin: install iproute2 "
                          "(apt-get install iproute2, dnf install iproute-tc), or drop {emulate_nodes}")


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip``/``tc`` (found beside the system's tools); RuntimeError with its message on failure."""
    tool = _tool(args[0]) or args[0]
    result = subprocess.run([tool, *args[1:]], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed: {' '.join(result.stderr.split()) or result.returncode}")
    return result


def node_namespace(launcher_pid: int, node: int) -> str:
    """The namespace of ``node`` of the cluster of the launcher ``launcher_pid``."""
    return f"{_PREFIX}{launcher_pid}n{node}"


def switch_namespace(launcher_pid: int) -> str:
    """The namespace holding the bridge of the cluster of the launcher ``launcher_pid``."""
    return f"{_PREFIX}{launcher_pid}sw"


def set_link(namespace: str, up: bool) -> None:
    """Cut (``up=False``) or restore a node's link: ``ip -n NAMESPACE link set eth0 down/up``."""
    _run("ip", "-n", namespace, "link", "set", NODE_INTERFACE, "up" if up else "down")


def list_namespaces() -> List[str]:
    """The names of the network namespaces ``ip netns`` knows."""
    result = _run("ip", "netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete(namespaces: Sequence[str]) -> None:
    """Remove the namespaces (node links first: a process still inside keeps its namespace,
    never the links and their qdiscs). Missing ones are skipped."""
    present = set(list_namespaces())
    for name in namespaces:
        if name in present and not name.endswith("sw"):
            _run("ip", "-n", name, "link", "del", NODE_INTERFACE, check=False)  # both ends, their qdiscs
    for name in namespaces:
        if name in present:
            _run("ip", "netns", "del", name, check=False)


def sweep_stale() -> List[str]:
    """Remove the namespaces of emulated clusters whose launcher is no longer alive; return them."""
    stale = [name for name in list_namespaces()
             if (match := _NAME.match(name)) and not _alive(int(match.group(1)))]
    _delete(stale)
    return stale


def _libc_setns() -> Callable[[int, int], int]:
    """``setns(2)``: os.setns (Python >= 3.12), else libc's through ctypes (resolved here, in the
    parent: a forked child must not dlopen)."""
    if hasattr(os, "setns"):
        return lambda fd, kind: os.setns(fd, kind) or 0  # type: ignore[attr-defined]
    return ctypes.CDLL(None, use_errno=True).setns


def _setns_into(path: str, setns: Callable[[int, int], int]) -> None:
    """Move the calling process into the network namespace ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {path}: {os.strerror(errno)}")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class EmulatedNode:
    """One node: its namespace, its interface and address there, its port on the switch."""

    index: int
    namespace: str
    address: str
    switch_port: str
    interface: str = NODE_INTERFACE

    def enter(self) -> Callable[[], None]:
        """A ``preexec_fn`` that starts the child inside this node's namespace (the child keeps
        its own pid: no ``ip netns exec`` in between)."""
        path, setns = f"/var/run/netns/{self.namespace}", _libc_setns()  # where ip netns keeps them
        return lambda: _setns_into(path, setns)


class EmulatedCluster:
    """``nodes`` network namespaces joined by one bridge, every link shaped to ``rate_bits_per_s``
    in both directions. A context manager: created on enter, removed on exit (see module doc).

    ``name_prefix`` (default ``csgd<pid>``) starts every namespace's name; only the default's
    leftovers are swept once this process is gone."""

    def __init__(self, nodes: int, rate_bits_per_s: int, name_prefix: Optional[str] = None):
        if not 1 <= nodes <= _MAX_NODES:
            raise ConfigError(f"{{emulate_nodes}} {nodes} is invalid: use 1 .. {_MAX_NODES} nodes")
        self.rate_bits_per_s = parse_rate(rate_bits_per_s)
        self.prefix = name_prefix or f"{_PREFIX}{os.getpid()}"
        pid = os.getpid()
        subnet = f"10.{(pid >> 8) & 255}.{pid & 255}"
        self.switch = f"{self.prefix}sw"
        self.nodes = [EmulatedNode(i, f"{self.prefix}n{i}", f"{subnet}.{i + 1}", f"p{i}") for i in range(nodes)]
        self._created: List[str] = []
        self._previous_term: object = None

    @property
    def namespaces(self) -> List[str]:
        return [node.namespace for node in self.nodes] + [self.switch]

    def __enter__(self) -> "EmulatedCluster":
        check_available()
        sweep_stale()
        if threading.current_thread() is threading.main_thread():  # only there can handlers change
            self._previous_term = signal.getsignal(signal.SIGTERM)
            if self._previous_term == signal.SIG_DFL:  # SIGTERM unwinds through __exit__, like Ctrl-C
                signal.signal(signal.SIGTERM, _terminate)
        try:
            self._create()
        except BaseException as exc:
            self.close()
            if isinstance(exc, RuntimeError):  # e.g. a kernel without veth, bridge or sch_htb
                raise ConfigError(f"{{emulate_nodes}}: the emulated cluster could not be built: {exc} (it needs "
                                  "veth, bridge and HTB (sch_htb) in the kernel, and CAP_NET_ADMIN and "
                                  "CAP_SYS_ADMIN): run on such a machine, or drop {emulate_nodes}") from None
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every namespace, link and qdisc of this cluster (signals wait until it is done)."""
        blocked = {signal.SIGINT, signal.SIGTERM}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            _delete(self._created)
            left = sorted(set(self._created) & set(list_namespaces()))
            if left:
                log.warning("emulated cluster: could not remove %s: remove them with ip netns del", ", ".join(left))
            self._created = []
        finally:
            if self._previous_term is not None and signal.getsignal(signal.SIGTERM) is _terminate:
                signal.signal(signal.SIGTERM, self._previous_term)  # type: ignore[arg-type]
            self._previous_term = None
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _add_namespace(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._created.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def _create(self) -> None:
        sw = self.switch
        self._add_namespace(sw)
        _run("ip", "-n", sw, "link", "add", _BRIDGE, "type", "bridge")
        _run("ip", "-n", sw, "link", "set", _BRIDGE, "addrgenmode", "none", "up")
        for node in self.nodes:
            ns = node.namespace
            self._add_namespace(ns)
            _run("ip", "-n", ns, "link", "add", node.interface, "type", "veth", "peer", "name", node.switch_port,
                 "netns", sw)
            _run("ip", "-n", ns, "link", "set", node.interface, "addrgenmode", "none")  # IPv4 only
            _run("ip", "-n", ns, "addr", "add", f"{node.address}/24", "dev", node.interface)
            _run("ip", "-n", sw, "link", "set", node.switch_port, "addrgenmode", "none", "master", _BRIDGE)
            self._shape(ns, node.interface)  # the node's uplink (node -> switch)
            self._shape(sw, node.switch_port)  # its downlink (switch -> node)
            _run("ip", "-n", sw, "link", "set", node.switch_port, "up")
            _run("ip", "-n", ns, "link", "set", node.interface, "up")

    def _shape(self, namespace: str, device: str) -> None:
        """HTB at the rate on ``device``'s egress, a queue of :data:`QUEUE_S` seconds at most."""
        rate = self.rate_bits_per_s
        burst = max(64 * 1024 + 1514, int(rate * 0.001 / 8))  # a whole GSO super-packet, or 1 ms at the rate
        queue = max(16, int(rate * QUEUE_S / 8 / 1514))  # packets (a GSO super-packet counts as one)
        _run("tc", "-n", namespace, "qdisc", "add", "dev", device, "root", "handle", "1:", "htb", "default", "1")
        _run("tc", "-n", namespace, "class", "add", "dev", device, "parent", "1:", "classid", "1:1", "htb",
             "rate", str(rate), "ceil", str(rate), "burst", str(burst), "cburst", str(burst))
        _run("tc", "-n", namespace, "qdisc", "add", "dev", device, "parent", "1:1", "handle", "10:", "pfifo",
             "limit", str(queue))

    def cut(self, node: int) -> None:
        """Cut ``node``'s link (its interface down): a network partition, its processes alive."""
        set_link(self.nodes[node].namespace, up=False)

    def restore(self, node: int) -> None:
        """Bring ``node``'s link back up."""
        set_link(self.nodes[node].namespace, up=True)


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM while a cluster exists: exit through the context managers (128 + 15)."""
    raise SystemExit(128 + signum)
