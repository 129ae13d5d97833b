"""An independent single-process NumPy reference of the peer-to-peer updates, and the cases the
p2p math tests run (test_p2p_math.py, the ``p2p_runs`` fixture of conftest.py).

The reference keeps every node's replica as one row of a matrix and is written from the math
(the docstrings of crossover_sgd/algorithms/p2p/*.py and the notes' section 2), not from the
package's code: only the graph (neighbours, the steps each edge exchanges at, the signs
``A_{i|j}``) comes from :class:`topology.nodes.NodeGraph`, as an input.

Synchronous semantics: a node's step t is (1) the gradient of its own loss at its model, (2) its
update, (3) the exchanges of step t (``NodeGraph.exchanges_at(i, t)``), whose messages are
computed at step t and arrive at step t; a neighbour's "last message" is what arrived at the
edge's last exchange, before any exchange what the neighbour would have sent at the common
initial model ``w_0``.

The model is ``nn.Linear(5, 3)``: the flat vector is the weight (3 x 5, row-major) then the
bias; node i's loss at a step is ``0.5/m * ||X_i W^T + b - Y_i||^2`` on that step's data.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

IN_FEATURES, OUT_FEATURES = 5, 3
N_WEIGHT = IN_FEATURES * OUT_FEATURES
DIM = N_WEIGHT + OUT_FEATURES
STEPS = 6
LR = 0.05

# ----------------------------------------------------------------------------- the cases

#: The 5-node irregular graph (degrees 2, 2, 3, 2, 1), written as node_list.json files by the
#: fixture. With K = 2 the edge p0 -- p1 lists different slots at its two ends (as the
#: original's files do): it exchanges at both steps of a round.
NODE_NAMES = ("p0", "p1", "p2", "p3", "p4")
NODE_LISTS = {
    "nl5k1": {"nodes": {
        "p0": {"round": 1, "edges": {"p1": 0, "p2": 0}},
        "p1": {"round": 1, "edges": {"p0": 0, "p2": 0}},
        "p2": {"round": 1, "edges": {"p0": 0, "p1": 0, "p3": 0}},
        "p3": {"round": 1, "edges": {"p2": 0, "p4": 0}},
        "p4": {"round": 1, "edges": {"p3": 0}},
    }},
    "nl5k2": {"nodes": {
        "p0": {"device": "cpu", "round": 2, "edges": {"p1": 0, "p2": 1}},
        "p1": {"device": "cpu", "round": 2, "edges": {"p0": 1, "p2": 0}},
        "p2": {"device": "cpu", "round": 2, "edges": {"p0": 1, "p1": 0, "p3": 0}},
        "p3": {"device": "cpu", "round": 2, "edges": {"p2": 0, "p4": 1}},
        "p4": {"device": "cpu", "round": 2, "edges": {"p3": 1}},
    }},
}

_SGD = {"eta": 1.0, "rho": 0.1}


def _case(algorithm: str, graph: str, k: int = 1, **options) -> Tuple[str, dict]:
    """(name, spec): ``graph`` is ring5, complete5 (generated, K = ``k``) or a NODE_LISTS key (its K
    is in the file). Every case has 5 nodes: one launch of 5 processes runs them all."""
    name = f"{algorithm}_{graph}" + ("" if graph in NODE_LISTS else f"_k{k}")
    name += "".join(f"_{key}{value}" for key, value in options.items() if key in ("piw", "use_gcoef",
                                                                                   "primal_iterations"))
    values = {"algorithm": algorithm, "lr": LR, **options}
    if graph not in NODE_LISTS:
        values.update(graph=graph.rstrip("0123456789"), round=k)
    return name, {"graph": graph, "options": values, "steps": STEPS}


#: Every algorithm on every graph, K = 2 for each that uses the edge slots (CADMM: P = 1, 2, 3).
CASES: Dict[str, dict] = dict([
    _case("dsgd", "ring5", 1),
    _case("dsgd", "complete5", 2),
    _case("dsgd", "nl5k2"),
    _case("gossip-sgd", "ring5", 1),
    _case("gossip-sgd", "complete5", 1),
    _case("gossip-sgd", "nl5k2"),
    _case("pdmm-sgd", "ring5", 2, **_SGD),
    _case("pdmm-sgd", "complete5", 1, eta=0.5, rho=0.3),
    _case("pdmm-sgd", "nl5k1", **_SGD),
    _case("admm-sgd", "ring5", 1, **_SGD),
    _case("admm-sgd", "complete5", 2, eta=0.5, rho=0.3),
    _case("admm-sgd", "nl5k2", **_SGD),
    _case("pdmm-isvr", "complete5", 2, piw=1.0, use_gcoef=True),
    _case("pdmm-isvr", "ring5", 2, piw=0.5, use_gcoef=False),
    _case("pdmm-isvr", "nl5k1", piw=0.5, use_gcoef=True),
    _case("admm-isvr", "ring5", 2, piw=2.0, use_gcoef=True),
    _case("admm-isvr", "complete5", 2, piw=1.0, use_gcoef=True),
    _case("admm-isvr", "nl5k2", piw=2.0, use_gcoef=False),
    _case("cadmm", "ring5", 1, rho_init=0.2, rho_scaling=1.1, primal_iterations=2),
    _case("cadmm", "complete5", 1, rho_init=0.3, rho_scaling=1.0, primal_iterations=1),
    _case("cadmm", "nl5k1", rho_init=0.2, rho_scaling=1.5, primal_iterations=3),
])


def world_size(case: dict) -> int:
    """The number of nodes (processes) of a case."""
    graph = case["graph"]
    return len(NODE_NAMES) if graph in NODE_LISTS else int(graph.lstrip("abcdefghijklmnopqrstuvwxyz"))


# ----------------------------------------------------------------------------- the model


def gradient(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d/dw of ``0.5/m * ||x W^T + b - y||^2`` (w = [W row-major, b])."""
    weight, bias = w[:N_WEIGHT].reshape(OUT_FEATURES, IN_FEATURES), w[N_WEIGHT:]
    residual = x @ weight.T + bias - y
    return np.concatenate([(residual.T @ x).ravel(), residual.sum(axis=0)]) / x.shape[0]


def fan_in_scale() -> np.ndarray:
    """``s = sqrt(fan-in)`` per element: sqrt(5) on the weight (fan-in 5), 1 on the bias."""
    return np.concatenate([np.full(N_WEIGHT, np.sqrt(IN_FEATURES)), np.ones(OUT_FEATURES)])


# ----------------------------------------------------------------------------- the updates


def simulate(options: Mapping, graph, w0: np.ndarray, data: Sequence[Sequence[Tuple[np.ndarray, np.ndarray]]],
             steps: int) -> Tuple[np.ndarray, np.ndarray]:
    """Run ``steps`` synchronous steps of ``options["algorithm"]`` on every node of ``graph``
    from the common model ``w0``; ``data[t][i]`` = (X, Y) of node i at step t. Returns the
    models after every step and the gradients of every step, both (steps, nodes, DIM)."""
    update = {"dsgd": _dsgd, "gossip-sgd": _gossip_sgd, "pdmm-sgd": _primal_dual, "admm-sgd": _primal_dual,
              "pdmm-isvr": _primal_dual, "admm-isvr": _primal_dual, "cadmm": _cadmm}[options["algorithm"]]
    n = graph.n
    w = np.tile(np.asarray(w0, dtype=np.float64), (n, 1))
    models, grads = [], []

    def grad_of(t: int) -> np.ndarray:
        g = np.stack([gradient(w[i], *data[t][i]) for i in range(n)])
        grads.append(g)
        return g

    for _ in update(options, graph, w, grad_of, steps):
        models.append(w.copy())
    return np.stack(models), np.stack(grads)


def _neighbours(graph, i: int) -> List[int]:
    return list(graph.neighbours(i))


def _dsgd(options, graph, w, grad_of, steps):
    """SGD step; ``w_i = (w_i + sum over all neighbours j of last_{i<-j}) / (E_i + 1)``; then
    send w_i to the neighbours whose edge exchanges at this step."""
    n, lr = graph.n, options["lr"]
    last = {(i, j): w[i].copy() for i in range(n) for j in _neighbours(graph, i)}  # all start at w_0
    for t in range(steps):
        w -= lr * grad_of(t)
        for i in range(n):
            nbrs = _neighbours(graph, i)
            w[i] = (w[i] + sum(last[(i, j)] for j in nbrs)) / (len(nbrs) + 1)
        for i in range(n):
            for j in graph.exchanges_at(i, t):
                last[(i, j)] = w[j].copy()
        yield


def _gossip_sgd(options, graph, w, grad_of, steps):
    """SGD step; for each due neighbour j in rank order ``w_i = (w_i + last_{i<-j}) / 2`` and j
    is sent w_i as it stands right after that average."""
    n, lr = graph.n, options["lr"]
    last = {(i, j): w[i].copy() for i in range(n) for j in _neighbours(graph, i)}
    for t in range(steps):
        w -= lr * grad_of(t)
        sent = {}
        for i in range(n):
            for j in sorted(graph.exchanges_at(i, t)):
                w[i] = (w[i] + last[(i, j)]) / 2
                sent[(i, j)] = w[i].copy()
        for (i, j), value in sent.items():
            last[(j, i)] = value
        yield


def isvr_step(lr: float, piw: float, k: int, e: int, use_gcoef: bool) -> Tuple[float, float]:
    """(eta, gc) of PDMM-ISVR / ADMM-ISVR for a node with E = e neighbours."""
    eta = piw / (lr * (k * e + k - piw * e))
    gc = 1 - lr * eta * e * (k / piw - 1) if use_gcoef else 1.0
    return eta, gc


def _primal_dual(options, graph, w, grad_of, steps):
    """Duals z_{i|j} per edge end, starting at ``A_{i|j} w_0``; the primal update of the name;
    at an exchange i sends ``y_{i|j} = z_{i|j} - 2 A_{i|j} w_i`` (and w_i for the -SGD methods),
    then ``z_{i|j} = y_{j|i}`` (PDMM) or ``(z_{i|j} + y_{j|i}) / 2`` (ADMM)."""
    name, n, lr = options["algorithm"], graph.n, options["lr"]
    admm = name.startswith("admm")
    z = {(i, j): graph.sign(i, j) * w[i].copy() for i in range(n) for j in _neighbours(graph, i)}
    model = {(i, j): w[i].copy() for i in range(n) for j in _neighbours(graph, i)}  # last w_j at i
    scale = fan_in_scale()
    for t in range(steps):
        g = grad_of(t)
        for i in range(n):
            nbrs = _neighbours(graph, i)
            e = len(nbrs)
            dual = sum(graph.sign(i, j) * z[(i, j)] for j in nbrs)
            if name.endswith("-sgd"):
                mu, eta, rho = 1.0 / lr, options["eta"], options["rho"]
                models = sum(model[(i, j)] for j in nbrs)
                w[i] = (mu * w[i] - g[i] + (scale * eta / e) * dual + (scale * rho / e) * models) / (
                    mu + scale * eta + scale * rho)
            else:
                eta, gc = isvr_step(lr, options["piw"], graph.round, e, options["use_gcoef"])
                w[i] = (w[i] / lr - gc * g[i] + eta * dual) / (1 / lr + e * eta)
        y = {(i, j): z[(i, j)] - 2 * graph.sign(i, j) * w[i] for i in range(n) for j in graph.exchanges_at(i, t)}
        for (i, j) in y:
            z[(i, j)] = (z[(i, j)] + y[(j, i)]) / 2 if admm else y[(j, i)].copy()
            model[(i, j)] = w[j].copy()
        yield


def _cadmm(options, graph, w, grad_of, steps):
    """Rounds of P SGD steps on ``f_i(x) + <alpha_i, x> + c sum_j ||x - (x_i^k + x_j^k)/2||^2``;
    at the end of each round every edge exchanges x^{k+1}, ``alpha_i += c sum_j (x_i - x_j)``,
    the anchors become x^{k+1} and ``c *= rho_scaling``."""
    n, lr, p = graph.n, options["lr"], options["primal_iterations"]
    c = options["rho_init"]
    alpha = np.zeros_like(w)
    anchor = w.copy()  # x_i^k
    nbr_anchor = {(i, j): w[j].copy() for i in range(n) for j in _neighbours(graph, i)}  # x_j^k at i
    for t in range(steps):
        g = grad_of(t)
        for i in range(n):
            nbrs = _neighbours(graph, i)
            # the gradient of c * sum_j ||x - (x_i^k + x_j^k)/2||^2 at x = w_i
            penalty = sum(2 * c * (w[i] - (anchor[i] + nbr_anchor[(i, j)]) / 2) for j in nbrs)
            w[i] = w[i] - lr * (g[i] + alpha[i] + penalty)
        if (t + 1) % p == 0:
            for i in range(n):
                alpha[i] = alpha[i] + c * sum(w[i] - w[j] for j in _neighbours(graph, i))
                for j in _neighbours(graph, i):
                    nbr_anchor[(i, j)] = w[j].copy()
            anchor = w.copy()
            c *= options["rho_scaling"]
        yield
