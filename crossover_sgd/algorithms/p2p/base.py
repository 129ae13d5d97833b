"""What the peer-to-peer consensus family shares: the node graph, the links to the neighbours,
the step clock that says which edges exchange, stragglers on purpose, and the bookkeeping of
lost neighbours.

Every rank is a *node* of an undirected graph (:class:`topology.nodes.NodeGraph`: from the
original's ``node_list.json``/``hosts.json``, or generated: ``--graph ring`` by default). Node
``i`` has E live neighbours; each edge has a slot ``s`` in ``0..K-1`` (``--round K``) and its two
ends exchange one message at the local steps ``t`` with ``t % K == s``
(:meth:`P2PAlgorithm.after_step`). Messages travel over :class:`~crossover_sgd.comm.edges.EdgeLinks`
(one small Gloo group per edge): synchronous by default, ``--async_step`` for no waiting, and
``--swap_timeout S`` to drop a neighbour that does not answer within S seconds and go on.

The family uses no collective over the training group after the start (``group_collectives =
False``): each node evaluates, checkpoints and stops alone, so a lost node blocks no one.

A subclass says what it sends (:meth:`P2PAlgorithm.outgoing`), what it does with what arrived
(:meth:`P2PAlgorithm.absorb`), and how it steps (:meth:`Algorithm.optimizer_step` and
:meth:`P2PAlgorithm.mix`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar, ContextManager, Dict, List, Optional

import torch
from torch import nn

from crossover_sgd.algorithms.base import Algorithm
from crossover_sgd.algorithms.options import AlgorithmOptions, option
from crossover_sgd.comm import FlatParams
from crossover_sgd.comm.edges import EdgeLinks, LostNeighbour, edge_groups
from crossover_sgd.errors import ConfigError, PeerError
from crossover_sgd.runtime.launch import LOCAL_LAUNCHER_ENV
from crossover_sgd.runtime.watchdog import Heartbeat, end_rank
from topology import GRAPH_KINDS
from topology.nodes import NodeGraph, NodeListError, generated_nodes, load_node_list

__all__ = ["P2POptions", "P2PAlgorithm", "node_graph"]

log = logging.getLogger(__name__)


@dataclass
class P2POptions(AlgorithmOptions):
    graph: str = option("ring", "peer-to-peer: the generated graph when no --node-list is given",
                        choices=GRAPH_KINDS)
    graph_degree: Optional[int] = option(None, "peer-to-peer: the degree k of --graph regular or erdos-renyi",
                                         minimum=1)
    node_list: Optional[str] = option(None, "peer-to-peer: the original's node_list.json (per node: round, "
                                            "edges {neighbour: slot}, device)", metavar="FILE")
    hosts: Optional[str] = option(None, "peer-to-peer: the original's hosts.json (node names in rank order, "
                                        "addresses; the first is the rendezvous)", metavar="FILE")
    node_name: Optional[str] = option(None, "peer-to-peer: this process's node (a process started by hand: "
                                            "rank and world from --hosts)", aliases=("--nodename",), metavar="NAME")
    round: int = option(1, "peer-to-peer: steps per round K of a generated graph (edge slots 0..K-1)", minimum=1)
    async_step: bool = option(False, "peer-to-peer: no waiting for neighbours: use the last message that "
                                     "arrived from each", metavar="BOOL")
    swap_timeout: Optional[float] = option(None, "peer-to-peer: drop a neighbour silent for this many seconds "
                                                  "and go on (default: a lost neighbour ends the run)")  # > 0: check()
    sleep_factor: float = option(0.0, "peer-to-peer: sleep this multiple of each step's time (stragglers on "
                                      "purpose)", minimum=0.0)
    slow_nodes: Optional[str] = option(None, "peer-to-peer: comma-separated node names that sleep "
                                             "(default: every node)", metavar="NAMES")

    def check(self, world_size: Optional[int]) -> None:
        if self.hosts is not None and self.node_list is None:
            raise ConfigError("{hosts} needs {node_list} (the graph of the named nodes)")
        if self.swap_timeout is not None and not (math.isfinite(self.swap_timeout) and self.swap_timeout > 0):
            raise ConfigError(f"{{swap_timeout}} {self.swap_timeout:g} is invalid: use a finite number of seconds > 0")
        nodes = node_graph(self, world_size or 0, seed=0, check_size=world_size is not None)
        if self.node_name is not None and (self.node_list is not None or world_size is not None):
            _node_index(nodes, self.node_name, self.node_list)
        for name in (self.slow_nodes or "").split(","):
            if name.strip() and name.strip() not in nodes.names and world_size is not None:
                raise ConfigError(f"{{slow_nodes}}: {name.strip()!r} is not a node: the nodes are "
                                  f"{', '.join(nodes.names)}")


def _heartbeat(ctx, timeout: float) -> Optional[Heartbeat]:
    """This node's heartbeat in the rendezvous store: whether a silent neighbour is alive. None
    for a single node or when the store cannot be reached (silence alone then decides).

    Its watchdog ends this node (one line, exit code 4: :func:`~crossover_sgd.runtime.watchdog.end_rank`)
    when the store has not answered a beat for ``timeout`` seconds: the node is cut off from the
    store's side of the job (a partition), which drops it as it drops a killed node."""
    if ctx.world_size == 1:
        return None
    try:
        beat = Heartbeat(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), ctx.rank, ctx.world_size,
                         interval=min(0.5, timeout / 4), connect_timeout=ctx.timeout_s,
                         op_timeout=min(2.0, timeout)).start()
    except (KeyError, ValueError, RuntimeError) as exc:
        log.warning("node %d: no heartbeat (a silent neighbour is dropped on silence alone): %s", ctx.rank, exc)
        return None
    return beat.watch(timeout, end_rank(ctx.rank))


def _first_lost(heartbeat: Heartbeat, name: str) -> str:
    """Record ``name`` as the first node lost in the run unless one is recorded already (in the
    rendezvous store); return the recorded one. A node that gives up because its neighbour gave
    up thus names the node lost first. Without an answer from the store (its host is the lost
    node, or this node is cut off from it): ``name``."""
    recorded = heartbeat.compare_set("crossover_sgd/p2p/first_lost", "", name)
    return recorded if recorded else name


def _node_index(nodes: NodeGraph, name: str, node_list: Optional[str] = None) -> int:
    if name not in nodes.names:
        graph = f"{{node_list}} {node_list}" if node_list is not None else "the graph"
        raise ConfigError(f"{{node_name}} {name!r} is not a node of {graph}: the nodes are {', '.join(nodes.names)}")
    return nodes.names.index(name)


def node_graph(options: P2POptions, world_size: int, seed: int, check_size: bool = True) -> NodeGraph:
    """The run's graph: the user's files, or ``--graph`` over ``world_size`` nodes."""
    if options.node_list is None and options.graph in ("regular", "erdos-renyi") and options.graph_degree is None:
        raise ConfigError(f"{{graph}} {options.graph} needs {{graph_degree}} K (the "
                          f"{'expected ' if options.graph == 'erdos-renyi' else ''}degree of every node)")
    try:
        if options.node_list is not None:
            nodes = load_node_list(options.node_list, options.hosts)
        elif not check_size:
            return generated_nodes("complete", 2, 1)  # nothing to check before the world size is known
        else:
            nodes = generated_nodes(options.graph, world_size, options.round, k=options.graph_degree, seed=seed)
    except NodeListError as exc:  # named by the file at fault (every message starts with its path)
        hosts = options.hosts is not None and str(exc).startswith(f"{os.fspath(options.hosts)}: ")
        raise ConfigError(f"{'{hosts}' if hosts else '{node_list}'}: {exc}") from None
    except ValueError as exc:  # a generated graph that cannot exist (e.g. a 3-regular graph on 5 nodes)
        raise ConfigError(f"{{graph}} {options.graph} on {world_size} nodes: {exc}") from None
    if check_size and nodes.n != world_size:
        raise ConfigError(f"{{node_list}} {options.node_list} has {nodes.n} nodes but the run has {world_size} "
                          f"rank{'s' if world_size != 1 else ''}: start one rank per node ({nodes.n} ranks)")
    return nodes


class P2PAlgorithm(Algorithm):
    """Base of the family: see the module docstring."""

    options_class: ClassVar = P2POptions
    group_collectives = False
    metric_columns = {"live_neighbours": float("nan"), "dropped_neighbours": float("nan"),
                      "p2p_exchanges": float("nan")}
    #: Whether the flat state includes floating buffers (BatchNorm statistics) besides parameters.
    with_buffers: ClassVar[bool] = False

    # ----------------------------------------------------------------------------- set-up
    def prepare(self, model: nn.Module) -> nn.Module:
        model = super().prepare(model)  # identical initial models on every node
        ctx, opts = self.ctx, self.options
        self.nodes = node_graph(opts, ctx.world_size, seed=self.config.seed)
        self.me = ctx.rank
        self.name_ = self.nodes.names[self.me]
        tensors = list(model.parameters())
        if self.with_buffers:
            tensors += [b for b in model.buffers() if b.is_floating_point()]
        if len({t.dtype for t in tensors}) != 1:
            raise ConfigError("{algorithm} " + self.name + " needs the model's parameters in one dtype")
        self.params = [p for p in model.parameters()]
        self.flat = FlatParams(tensors, share_storage=True)
        (self.w,) = self.flat.pack()  # the node's state, one flat tensor the model lives in
        self.grad_regions = self._regions_like(self.params)
        self.step_count = 0
        timeout = opts.swap_timeout if opts.swap_timeout is not None else self.config.timeout
        groups = edge_groups(self.nodes.graph.edges, self.me, timeout_s=86_400.0)  # the links decide losses
        self.init_state()
        initial = {peer: self.initial_message(peer) for peer in self.nodes.neighbours(self.me)}
        self.heartbeat = _heartbeat(ctx, timeout)
        self.links = EdgeLinks(self.me, groups, initial, asynchronous=opts.async_step, timeout_s=timeout,
                               drop=opts.swap_timeout is not None, stats=self.comm,
                               names=dict(enumerate(self.nodes.names)),
                               liveness=self.heartbeat.staleness if self.heartbeat is not None else None,
                               finished=self.heartbeat.is_done if self.heartbeat is not None else None,
                               bound_s=max(self.config.timeout, 3 * timeout))
        slow = {n.strip() for n in (opts.slow_nodes or "").split(",") if n.strip()}
        self.sleep_factor = opts.sleep_factor if (not slow or self.name_ in slow) else 0.0
        self._step_started: Optional[float] = None  # the first step starts with its first micro-batch
        return model

    def _regions_like(self, tensors: List[torch.Tensor]) -> List[torch.Tensor]:
        """A flat buffer shaped like ``self.w`` holding the parameters' gradients (views per tensor)."""
        self.g = torch.zeros_like(self.w)
        regions, offset = [], 0
        for t in tensors:
            regions.append(self.g[offset:offset + t.numel()].view(t.shape))
            offset += t.numel()
        return regions

    def flat_grad(self) -> torch.Tensor:
        """The parameters' gradients as one flat tensor (zeros where a parameter has none)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        torch._foreach_copy_(self.grad_regions, grads)
        return self.g[: sum(p.numel() for p in self.params)]

    @property
    def live(self) -> List[int]:
        return self.links.live

    def sign(self, peer: int) -> int:
        """A_{i|j}: +1 or -1, with A_{i|j} = -A_{j|i}."""
        return self.nodes.sign(self.me, peer)

    def peer_value(self, peer: int) -> torch.Tensor:
        """The last message from ``peer``, on this node's device."""
        return self.links.last(peer).to(self.w.device, non_blocking=True)

    # ----------------------------------------------------------------------------- per algorithm
    def init_state(self) -> None:
        """Create the per-edge state (before the links exist)."""

    def initial_message(self, peer: int) -> torch.Tensor:
        """What ``peer`` would send before its first exchange (identical models: its model)."""
        return self.w

    def outgoing(self, peer: int) -> torch.Tensor:
        """The flat message for ``peer`` at this exchange."""
        return self.w

    def due_peers(self) -> List[int]:
        """The live neighbours whose edge exchanges at this step (slot == step % K)."""
        return [p for p in self.nodes.exchanges_at(self.me, self.step_count) if p in self.links.edges]

    def mix(self, due: List[int]) -> None:
        """After the local step, before the exchange with ``due`` (uses the last messages)."""

    def absorb(self, fresh: Dict[int, torch.Tensor]) -> None:
        """Take the messages that arrived at this exchange (``fresh``: peer -> message)."""

    # ----------------------------------------------------------------------------- the loop
    def lr(self, optimizer: torch.optim.Optimizer) -> float:
        return float(optimizer.param_groups[0]["lr"])

    def micro_batch(self, is_last: bool) -> ContextManager[Any]:
        if self._step_started is None:  # the first step's time (--sleep-factor) leaves out the set-up
            self._step_started = time.perf_counter()  # (optimizer, data, the ranks' barriers)
        return super().micro_batch(is_last)

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.options.async_step:
            self.links.check_silence()
        due = self.due_peers()
        self.mix(due)
        try:
            fresh = self.links.exchange({p: self.outgoing(p) for p in due}) if due else {}
        except LostNeighbour as exc:
            lost = self.nodes.names[exc.peer]
            first = _first_lost(self.heartbeat, lost) if self.heartbeat is not None else lost
            cause = "" if first == lost else f"; the first node lost in this run: {first}"
            if self.me == 0 and self.heartbeat is not None:  # this process hosts the rendezvous store:
                time.sleep(min(5.0, self.links.timeout_s))  # keep it up while the others find their cause
            raise PeerError(f"{exc}{cause}") from exc
        self.absorb(fresh)
        self.flat.unpack()
        self.step_count += 1
        self.comm.rounds += 1 if due else 0
        self._straggle()

    def _straggle(self) -> None:
        now = time.perf_counter()
        if self.sleep_factor > 0 and self._step_started is not None:
            time.sleep(self.sleep_factor * (now - self._step_started))
        self._step_started = time.perf_counter()

    def node_label(self) -> Optional[str]:
        return self.name_

    def finish(self, status: str) -> None:
        """Say this node is done (its neighbours then take its closed connection for an end, not a
        loss); the store's host waits for the others to be done or lost before it goes."""
        if self.heartbeat is not None:
            self.heartbeat.mark_done()
            if self.me == 0:
                self.heartbeat.linger_until_done(self.links.timeout_s, limit=max(600.0, 10 * self.links.timeout_s))
            self.heartbeat.close()

    @classmethod
    def tolerates_lost_peers(cls, options: P2POptions) -> bool:
        return options.swap_timeout is not None

    @classmethod
    def launch_env(cls, options: P2POptions) -> Dict[str, str]:
        """A node started by hand (``--node-name``): its rank is its place in ``--hosts``, the
        world the hosts, the rendezvous the first host's address (and port, default 29500)."""
        if options.node_name is None:
            return {}
        if options.hosts is None or options.node_list is None:
            raise ConfigError("{node_name} (a node started by hand) needs {node_list} and {hosts}")
        nodes = node_graph(options, 0, seed=0, check_size=False)
        rank = _node_index(nodes, options.node_name, options.node_list)
        return {"RANK": str(rank), "WORLD_SIZE": str(nodes.n), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                "GROUP_RANK": str(rank), "MASTER_ADDR": nodes.addresses[0] or "127.0.0.1",
                "MASTER_PORT": str(nodes.ports[0] or 29500), LOCAL_LAUNCHER_ENV: "hosts"}

    def metrics(self) -> Dict[str, float]:
        return {"live_neighbours": float(len(self.links.edges)), "dropped_neighbours": float(len(self.links.dropped)),
                "p2p_exchanges": float(sum(e.exchanges for e in self.links.edges.values()))}

    def summary(self) -> Dict[str, Any]:
        """This node's part of the run's summary."""
        return {"node": self.name_, "rank": self.me, "neighbours": [self.nodes.names[p] for p in
                                                                     self.nodes.neighbours(self.me)],
                "live_neighbours": [self.nodes.names[p] for p in self.links.edges],
                "dropped_neighbours": [self.nodes.names[p] for p in self.links.dropped],
                "dropped_at": {self.nodes.names[p]: t for p, t in self.links.dropped_at.items()}}

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "step_count": self.step_count, "dropped": list(self.links.dropped),
                "edge_state": self.edge_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.step_count = int(state["step_count"])
        for peer in state["dropped"]:
            if peer in self.links.edges:
                del self.links.edges[peer]
                self.links.dropped.append(peer)
        self.load_edge_state(state["edge_state"])

    def edge_state(self) -> Dict[str, Any]:
        """Per-edge state to checkpoint (duals, last messages)."""
        return {"last": {p: e.last.clone() for p, e in self.links.edges.items()}}

    def load_edge_state(self, state: Dict[str, Any]) -> None:
        for peer, value in state["last"].items():
            if peer in self.links.edges:
                self.links.edges[peer].last.copy_(value)

