"""Peer-to-peer node graphs as users give them: ``node_list.json`` and ``hosts.json``, or generated.

The peer-to-peer family (D-SGD, PDMM, ADMM, ...) runs over an undirected graph of named
nodes. Every node runs ``round`` = K local steps per round; each edge has a slot in
``0..K-1``, and the two ends exchange at local step ``t`` when ``t % K`` is the slot.
:class:`NodeGraph` holds that graph with the nodes in rank order (node ``i`` is rank ``i``).

``node_list.json`` (the layout of the original code, nttcslab/ecl-isvr and the seed's fork)::

    {"nodes": {"node0": {"device": "cuda", "round": 8, "edges": {"node1": 0, "node7": 1}},
               "node1": {"device": "cuda", "round": 8, "edges": {"node0": 0, "node2": 1}}, ...}}

The ``{"nodes": ...}`` wrapper may be left out, and the nodes may be a list of such objects
each with a ``"name"``. ``device`` is optional (any string); ``round`` (K >= 1) must be the
same for every node; ``edges`` maps each neighbour to a slot in ``0..K-1``; every edge must
be listed at both ends, every node have a neighbour (unless it is alone) and the graph be connected.

Slots as the original uses them: node ``i`` starts the exchange with ``j`` when its step
counter (mod K) equals the slot ``i`` lists for ``j``, and ``j`` answers whatever step it is
at, so a pair whose two ends list different slots exchanges twice per round. The original's
own files do that (``node0: {"node1": 4}``, ``node1: {"node0": 1}``); they load as they are,
:attr:`NodeGraph.slots` keeps both ends' slots, and :meth:`NodeGraph.exchanges_at` counts
both. ``symmetric_slots=True`` (``--symmetric-slots``) rejects such files instead.

``hosts.json``::

    {"hosts": [{"name": "node0", "addr": "10.0.0.1", "port": "10000"}, ...]}    (the original's)
    {"node0": "10.0.0.1", ...}   or   {"node0": {"addr": "10.0.0.1", "port": 29500}, ...}

The address key may be ``addr``, ``address`` or ``host``; the port (optional) an integer or a
string of digits in 1..65535. With a hosts file, the rank order is its order; without, the
order of ``node_list.json``. Signs: ``A_{i|j} = +1`` if ``i < j`` else ``-1`` (so
``A_{i|j} = -A_{j|i}``). The original code uses the opposite sign (``+1`` towards nodes listed
before); flipping every sign flips every PDMM/ADMM dual and leaves the models unchanged.

Every bad input is one :class:`NodeListError` line naming the file, the value and what
would be accepted. :func:`generated_nodes` builds a graph with :func:`~topology.graph.make_graph`
and slots from a proper edge colouring (:func:`~topology.coloring.edge_colouring`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import operator
import os
import secrets
from dataclasses import dataclass
from typing import Any, Iterable

from .coloring import edge_colouring
from .graph import Graph, make_graph

__all__ = [
    "NodeListError",
    "NodeGraph",
    "load_node_list",
    "load_hosts",
    "generated_nodes",
    "write_node_list",
    "write_hosts",
]

_NODE_KEYS = ("device", "round", "edges")
_ADDRESS_KEYS = ("addr", "address", "host")
_MAX_PORT = 65535


class NodeListError(ValueError):
    """A bad node list or hosts file (one line: the file, the bad value, what would be accepted)."""


def _show(value: object, limit: int = 60) -> str:
    """``value`` as it would be written in JSON, shortened."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names_list(names: Iterable[str], limit: int = 8) -> str:
    names = list(names)
    shown = ", ".join(_show(v) for v in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


@dataclass(frozen=True)
class NodeGraph:
    """Named nodes in rank order over :attr:`graph`, with K = :attr:`round` steps per round.

    ``slots[(i, j)]`` is the step (mod K) at which node ``i`` starts the exchange with its
    neighbour ``j``; both orientations of every edge are keys. A mapping with only the keys
    ``i < j`` (:attr:`Graph.edges`) is taken for both ends. ``devices``, ``addresses`` and
    ``ports`` default to ``None`` for every node.
    """

    names: tuple[str, ...]
    graph: Graph
    round: int
    slots: dict[tuple[int, int], int]
    devices: tuple[str | None, ...] = ()
    addresses: tuple[str | None, ...] = ()
    ports: tuple[int | None, ...] = ()
    _table: tuple[tuple[tuple[int, ...], ...], ...] = dataclasses.field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        names, graph = tuple(self.names), self.graph
        if not isinstance(graph, Graph):
            raise NodeListError(f"graph must be a topology.Graph, got {type(graph).__name__}")
        n = graph.n
        if len(names) != n:
            raise NodeListError(f"{len(names)} names for a graph of {n} nodes: give one name per node")
        seen: set[str] = set()
        for name in names:
            if not isinstance(name, str) or not name:
                raise NodeListError(f"node name {_show(name)} is invalid: names are non-empty strings")
            if name in seen:
                raise NodeListError(f"node name {_show(name)} appears twice: names must be unique")
            seen.add(name)
        if not _is_int(self.round) or self.round < 1:
            raise NodeListError(f"round {_show(self.round)} is invalid: it must be an integer >= 1")
        slots = {(operator.index(i), operator.index(j)): s for (i, j), s in dict(self.slots).items()}
        if set(slots) == set(graph.edges):
            slots.update({(j, i): s for (i, j), s in list(slots.items())})
        wanted = {e for i, j in graph.edges for e in ((i, j), (j, i))}
        if set(slots) != wanted:
            odd = sorted(set(slots) ^ wanted)[0]
            raise NodeListError(
                f"slots must have one entry per edge end, i.e. keys {{(i, j), (j, i)}} for every edge: "
                f"{odd} is {'not an edge' if odd not in wanted else 'missing'}"
            )
        for key, s in slots.items():
            if not _is_int(s) or not 0 <= s < self.round:
                raise NodeListError(f"slot {_show(s)} of {key} is invalid: slots are integers in 0..{self.round - 1}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "slots", dict(sorted(slots.items())))
        for field, check in (("devices", _check_device), ("addresses", _check_address), ("ports", _check_port)):
            values = tuple(getattr(self, field)) or (None,) * n
            if len(values) != n:
                raise NodeListError(f"{len(values)} {field} for {n} nodes: give one per node (or none)")
            for v in values:
                check(v)
            object.__setattr__(self, field, values)
        table = [[[] for _ in range(self.round)] for _ in range(n)]
        for i, j in graph.edges:
            for s in {slots[(i, j)], slots[(j, i)]}:
                table[i][s].append(j)
                table[j][s].append(i)
        object.__setattr__(self, "_table", tuple(tuple(tuple(sorted(row)) for row in node) for node in table))

    def __hash__(self) -> int:
        fields = (self.names, self.graph, self.round, tuple(self.slots.items()))
        return hash(fields + (self.devices, self.addresses, self.ports))

    # --- structure -------------------------------------------------------------------

    @property
    def n(self) -> int:
        return self.graph.n

    def index(self, name: str) -> int:
        """Rank of the node called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise NodeListError(f"unknown node {_show(name)}: the nodes are {_names_list(self.names)}") from None

    def _node(self, i: int) -> int:
        i = operator.index(i)
        if not 0 <= i < self.n:
            raise NodeListError(f"node {i} is out of range: nodes are 0..{self.n - 1}")
        return i

    def neighbours(self, i: int) -> tuple[int, ...]:
        """Neighbours of node ``i``, ascending."""
        return self.graph.neighbours(self._node(i))

    def slot(self, i: int, j: int) -> int:
        """The slot node ``i`` lists for its neighbour ``j`` (the step at which ``i`` starts the exchange)."""
        i, j = self._node(i), self._node(j)
        try:
            return self.slots[(i, j)]
        except KeyError:
            raise NodeListError(f"{self.names[i]} -- {self.names[j]} ({i}, {j}) is not an edge") from None

    @property
    def symmetric(self) -> bool:
        """True when both ends of every edge list the same slot (one exchange per edge per round)."""
        return all(s == self.slots[(j, i)] for (i, j), s in self.slots.items())

    def exchanges_at(self, i: int, step: int) -> tuple[int, ...]:
        """Neighbours ``j`` node ``i`` exchanges with at local step ``step``: those with
        ``step % round`` equal to ``slot(i, j)`` or ``slot(j, i)``; ascending. Symmetric:
        ``j in exchanges_at(i, t)`` iff ``i in exchanges_at(j, t)``."""
        step = operator.index(step)
        if step < 0:
            raise NodeListError(f"step must be >= 0, got step={step}")
        return self._table[self._node(i)][step % self.round]

    def sign(self, i: int, j: int) -> int:
        """``A_{i|j}``: ``+1`` if ``i < j`` else ``-1`` (rank order = host-list order), so ``A_{i|j} = -A_{j|i}``."""
        i, j = self._node(i), self._node(j)
        if i == j:
            raise NodeListError(f"sign({i}, {j}): A_{{i|j}} is defined between two different nodes")
        return 1 if i < j else -1

    def max_exchanges_per_step(self) -> int:
        """The most neighbours one node exchanges with at one step."""
        return max((len(row) for node in self._table for row in node), default=0)

    # --- files -----------------------------------------------------------------------

    def to_node_list(self) -> dict[str, Any]:
        """The ``node_list.json`` object (the original's layout, ``{"nodes": {...}}``, rank order)."""
        nodes: dict[str, Any] = {}
        for i, name in enumerate(self.names):
            entry: dict[str, Any] = {} if self.devices[i] is None else {"device": self.devices[i]}
            entry["round"] = self.round
            entry["edges"] = {self.names[j]: self.slots[(i, j)] for j in self.neighbours(i)}
            nodes[name] = entry
        return {"nodes": nodes}

    def to_hosts(self, address: str = "127.0.0.1", port: int | None = None) -> dict[str, Any]:
        """The ``hosts.json`` object (the original's layout, ``{"hosts": [...]}``, rank order).

        A node without an address gets ``address``; without a port, ``port + rank`` (no port
        when ``port`` is None). Ports are written as strings of digits, as the original reads them.
        """
        _check_address(address)
        if port is not None:
            _check_port(port)
            if port + self.n - 1 > _MAX_PORT:
                raise NodeListError(
                    f"port {port} is too high for {self.n} nodes (node i gets port + i, up to {port + self.n - 1}): "
                    f"give a first port <= {_MAX_PORT - self.n + 1}"
                )
        hosts = []
        for i, name in enumerate(self.names):
            entry: dict[str, Any] = {"name": name, "addr": self.addresses[i] or address}
            p = self.ports[i] if self.ports[i] is not None else (None if port is None else port + i)
            if p is not None:
                entry["port"] = str(p)
            hosts.append(entry)
        return {"hosts": hosts}

    def describe(self) -> str:
        """A table: rank, node, device, address, neighbours with slots."""
        sym = self.symmetric
        lines = [
            f"# {self.graph.name}: {self.n} nodes, {self.graph.num_edges} edges, round {self.round} "
            f"(an edge exchanges at local step t when t % {self.round} is its slot); "
            f"at most {self.max_exchanges_per_step()} exchange(s) per node per step",
            "# A_{i|j} = +1 if rank i < rank j else -1"
            + ("" if sym else "; nbr@a/b: this node starts at slot a, the neighbour at slot b (both steps exchange)"),
        ]
        rows = [("rank", "node", "device", "address", "neighbours@slot")]
        for i, name in enumerate(self.names):
            addr = self.addresses[i] or "-"
            if self.ports[i] is not None:
                addr = f"{addr}:{self.ports[i]}"
            nbrs = " ".join(
                f"{self.names[j]}@{self.slots[(i, j)]}" + ("" if sym else f"/{self.slots[(j, i)]}")
                for j in self.neighbours(i)
            )
            rows.append((str(i), name, self.devices[i] or "-", addr, nbrs or "-"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        for r in rows:
            lines.append("  ".join([r[0].rjust(widths[0])] + [r[c].ljust(widths[c]) for c in (1, 2, 3)] + [r[4]]))
        return "\n".join(lines)


def _check_device(value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise NodeListError(f"device {_show(value)} is invalid: give a string such as \"cuda:0\" (or none)")


def _check_address(value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise NodeListError(f"address {_show(value)} is invalid: give a host name or IP address")


def _check_port(value: object) -> None:
    if value is not None and (not _is_int(value) or not 1 <= value <= _MAX_PORT):
        raise NodeListError(f"port {_show(value)} is invalid: ports are integers in 1..{_MAX_PORT}")


# --------------------------------------------------------------------------- reading


def _read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``; a duplicate key in any object is an error (not silently merged)."""
    where = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise NodeListError(f"{where}: cannot read it ({exc.strerror or exc}): give a readable JSON file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NodeListError(f"{where}: not UTF-8 text (bad byte at offset {exc.start}): give a JSON file") from None

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise NodeListError(
                    f"{where}: key {_show(key)} appears twice in one object (JSON would keep only the last): "
                    f"give each node, neighbour and field once"
                )
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise NodeListError(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _unwrap(data: Any, key: str, entry_key: str) -> Any:
    """``{key: X}`` -> ``X`` (the original's wrapper), unless it is a single entry called ``key``."""
    if isinstance(data, dict) and len(data) == 1 and key in data:
        inner = data[key]
        if isinstance(inner, list) or (isinstance(inner, dict) and entry_key not in inner):
            return inner
    return data


def _named_entries(where: str, data: Any, what: str, expected: str) -> list[tuple[str, Any]]:
    """``(name, value)`` in file order from an object keyed by name or a list of objects with ``"name"``."""
    if isinstance(data, dict):
        entries = list(data.items())
    elif isinstance(data, list):
        entries, seen = [], set()
        for k, item in enumerate(data):
            if not isinstance(item, dict) or "name" not in item:
                raise NodeListError(
                    f"{where}: {what} #{k} is {_show(item)}: "
                    f"in a list, each {what} is an object with \"name\" {expected}"
                )
            name = item["name"]
            if isinstance(name, str) and name in seen:
                raise NodeListError(f"{where}: {what} name {_show(name)} appears twice: give each {what} once")
            seen.add(name)
            entries.append((name, {key: v for key, v in item.items() if key != "name"}))
    else:
        raise NodeListError(
            f"{where}: the top level is {_kind(data)} ({_show(data)}): expected an object keyed by {what} name "
            f"or a list of {what}s with \"name\" {expected}"
        )
    if not entries:
        raise NodeListError(f"{where}: no {what}s: give at least one")
    for name, value in entries:
        if not isinstance(name, str) or not name.strip():
            raise NodeListError(f"{where}: {what} name {_show(name)} is invalid: names are non-empty strings")
        if isinstance(value, dict) and "name" in value and value["name"] != name:
            raise NodeListError(f"{where}: {what} {_show(name)} has \"name\": {_show(value['name'])}: they must agree")
    return entries


def load_hosts(path: str | os.PathLike) -> list[tuple[str, str, int | None]]:
    """``(name, address, port or None)`` per host of ``hosts.json`` (module doc), in file order."""
    where = os.fspath(path)
    data = _unwrap(_read_json(path), "hosts", "addr")
    entries = _named_entries(where, data, "host", "and \"addr\" (optional \"port\")")
    hosts: list[tuple[str, str, int | None]] = []
    taken: dict[tuple[str, int], str] = {}
    for name, value in entries:
        here = f"{where}: host {_show(name)}"
        if isinstance(value, str):
            value = {"addr": value}
        if not isinstance(value, dict):
            raise NodeListError(
                f"{here}: {_show(value)} is not an address: give \"10.0.0.1\" or {{\"addr\": ..., \"port\": ...}}"
            )
        value = {k: v for k, v in value.items() if k != "name"}
        unknown = [k for k in value if k not in _ADDRESS_KEYS and k != "port"]
        if unknown:
            raise NodeListError(
                f"{here}: unknown key {_show(unknown[0])}: expected one of addr, address, host and optional port"
            )
        given = [k for k in _ADDRESS_KEYS if k in value]
        if len(given) != 1:
            raise NodeListError(
                f"{here}: {'no address' if not given else 'several address keys ' + ', '.join(given)}: "
                f"give exactly one of addr, address, host"
            )
        addr = value[given[0]]
        if not isinstance(addr, str) or not addr.strip():
            raise NodeListError(f"{here}: address {_show(addr)} is invalid: give a host name or IP address")
        port = value.get("port")
        if isinstance(port, str) and port.isascii() and port.isdigit():
            port = int(port)
        if port is not None and (not _is_int(port) or not 1 <= port <= _MAX_PORT):
            raise NodeListError(
                f"{here}: port {_show(value.get('port'))} is invalid: ports are integers in 1..{_MAX_PORT}"
            )
        if port is not None:
            if (addr, port) in taken:
                raise NodeListError(
                    f"{here}: address {addr}:{port} is also host {_show(taken[(addr, port)])}'s: "
                    f"give each node its own port"
                )
            taken[(addr, port)] = name
        hosts.append((name, addr, port))
    return hosts


def load_node_list(
    path: str | os.PathLike, hosts_path: str | os.PathLike | None = None, *, symmetric_slots: bool = False
) -> NodeGraph:
    """Read ``node_list.json`` (and ``hosts.json``) into a validated :class:`NodeGraph` (module doc).

    Ranks follow the hosts file when given, else the node list. ``symmetric_slots``: reject an
    edge whose two ends list different slots (the original accepts it: each end starts its own exchange).
    """
    where = os.fspath(path)
    data = _unwrap(_read_json(path), "nodes", "edges")
    entries = _named_entries(where, data, "node", "and \"round\" and \"edges\"")
    names = [name for name, _ in entries]
    known = set(names)
    rounds: dict[str, int] = {}
    devices: dict[str, str | None] = {}
    listed: dict[str, dict[str, int]] = {}
    for name, value in entries:
        here = f"{where}: node {_show(name)}"
        if not isinstance(value, dict):
            raise NodeListError(f"{here}: {_show(value)} is not an object: give {{\"round\": K, \"edges\": {{...}}}}")
        unknown = [k for k in value if k not in _NODE_KEYS and k != "name"]
        if unknown:
            raise NodeListError(f"{here}: unknown key {_show(unknown[0])}: expected device, round, edges")
        for key in ("round", "edges"):
            if key not in value:
                raise NodeListError(f"{here}: no \"{key}\": give \"round\": K and \"edges\": {{neighbour: slot}}")
        k = value["round"]
        if not _is_int(k) or k < 1:
            raise NodeListError(f"{here}: round {_show(k)} is invalid: give an integer >= 1 (steps per round)")
        device = value.get("device")
        if device is not None and not isinstance(device, str):
            raise NodeListError(f"{here}: device {_show(device)} is invalid: give a string such as \"cuda:0\"")
        edges = value["edges"]
        if not isinstance(edges, dict):
            raise NodeListError(
                f"{here}: edges {_show(edges)} is {_kind(edges)}: give an object {{\"neighbour\": slot}}"
            )
        rounds[name], devices[name], listed[name] = k, device, edges
    first = names[0]
    for name in names:
        if rounds[name] != rounds[first]:
            raise NodeListError(
                f"{where}: node {_show(name)} has round {rounds[name]} but node {_show(first)} has round "
                f"{rounds[first]}: give every node the same round"
            )
    k = rounds[first]
    for name in names:
        here = f"{where}: node {_show(name)}"
        for nbr, s in listed[name].items():
            if nbr == name:
                raise NodeListError(f"{here}: self-edge {_show(nbr)}: an edge joins two different nodes")
            if nbr not in known:
                raise NodeListError(f"{here}: unknown neighbour {_show(nbr)}: the nodes are {_names_list(names)}")
            if not _is_int(s):
                raise NodeListError(
                    f"{here}: slot {_show(s)} for {_show(nbr)} is not an integer: give one in 0..{k - 1}"
                )
            if not 0 <= s < k:
                raise NodeListError(
                    f"{here}: slot {s} for {_show(nbr)} is out of range: slots are 0..{k - 1} (round {k})"
                )
    for name in names:
        for nbr, s in listed[name].items():
            back = listed[nbr].get(name)
            if back is None:
                raise NodeListError(
                    f"{where}: edge {_show(name)} -> {_show(nbr)} (slot {s}) has no {_show(nbr)} -> {_show(name)}: "
                    f"list every edge at both ends"
                )
            if symmetric_slots and back != s:
                raise NodeListError(
                    f"{where}: edge {_show(name)} -- {_show(nbr)}: {_show(name)} gives slot {s}, {_show(nbr)} gives "
                    f"slot {back}: give both ends the same slot"
                )
        if not listed[name] and len(names) > 1:
            raise NodeListError(f"{where}: node {_show(name)} has no edges: every node needs a neighbour")

    order = names
    addresses: dict[str, str | None] = dict.fromkeys(names)
    ports: dict[str, int | None] = dict.fromkeys(names)
    if hosts_path is not None:
        hosts_where = os.fspath(hosts_path)
        hosts = load_hosts(hosts_path)
        host_names = [h[0] for h in hosts]
        for h in host_names:
            if h not in known:
                raise NodeListError(
                    f"{hosts_where}: host {_show(h)} is not a node of {where} (nodes: {_names_list(names)})"
                )
        missing = [name for name in names if name not in set(host_names)]
        if missing:
            raise NodeListError(
                f"{hosts_where}: node {_show(missing[0])} of {where} is missing: give every node an address"
            )
        order = host_names
        for h, addr, port in hosts:
            addresses[h], ports[h] = addr, port
    rank = {name: i for i, name in enumerate(order)}
    slots = {(rank[a], rank[b]): s for a in order for b, s in listed[a].items()}
    graph = Graph(len(order), {(min(e), max(e)) for e in slots}, f"node list {where}")
    parts = graph.components()
    if len(parts) > 1:
        shown = "; ".join("{" + _names_list((order[i] for i in part), limit=5) + "}" for part in parts[:4])
        raise NodeListError(
            f"{where}: the graph is not connected: {len(parts)} components {shown}"
            f"{' ...' if len(parts) > 4 else ''}: add edges between them"
        )
    return NodeGraph(
        names=tuple(order),
        graph=graph,
        round=k,
        slots=slots,
        devices=tuple(devices[name] for name in order),
        addresses=tuple(addresses[name] for name in order),
        ports=tuple(ports[name] for name in order),
    )


# --------------------------------------------------------------------------- generating, writing


def generated_nodes(kind: str, n: int, round: int = 1, *, k: int | None = None, seed: int = 0) -> NodeGraph:
    """``make_graph(kind, n, k=k, seed=seed)`` as nodes ``node0..node{n-1}``; slot = edge colour % ``round``.

    The colours are a proper edge colouring (:func:`~topology.coloring.edge_colouring`, at most
    max degree + 1 colours): with ``round`` >= the number of colours each node exchanges with at
    most one neighbour per step; with fewer, several edges share a slot (``round=1``: every
    neighbour at every step, plain D-SGD gossip). Both ends of an edge get the same slot.
    """
    if not _is_int(round) or round < 1:
        raise ValueError(f"round={round!r} is invalid: it must be an integer >= 1 (steps per round)")
    graph = make_graph(kind, n, k=k, seed=seed)
    colours = edge_colouring(graph)
    return NodeGraph(
        names=tuple(f"node{i}" for i in range(graph.n)),
        graph=graph,
        round=round,
        slots={e: c % round for e, c in colours.items()},
    )


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the bytes of an indented JSON file."""
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a new file beside ``path`` and rename it over ``path`` (never half-written)."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_node_list(node_graph: NodeGraph, path: str | os.PathLike) -> None:
    """Write :meth:`NodeGraph.to_node_list` to ``path`` atomically."""
    _write_atomically(path, json_bytes(node_graph.to_node_list()))


def write_hosts(
    node_graph: NodeGraph, path: str | os.PathLike, address: str = "127.0.0.1", port: int | None = None
) -> None:
    """Write :meth:`NodeGraph.to_hosts` ``(address, port)`` to ``path`` atomically."""
    _write_atomically(path, json_bytes(node_graph.to_hosts(address, port)))
