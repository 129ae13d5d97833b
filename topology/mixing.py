"""Dense mixing matrices of one gossip round, and how segments map to columns.

Orientation (used everywhere in this package)
    The replicas' values are stacked as rows: ``x`` has shape ``(n, d)`` and row
    ``i`` belongs to rank ``i``. One round of one segment is ``x_new = W @ x``,
    so ``W[i, j]`` is the weight that rank ``i`` gives to the value of rank ``j``.
    Row-stochastic (rows sum to 1): every replica takes a convex combination of
    values (plain averaging). Column-stochastic (columns sum to 1): every replica
    splits its mass among recipients, so ``sum_i x_i`` is conserved (push-sum).
    Doubly stochastic: both, so the average of the replicas is conserved too.

Matrices
    * Crossover segment ``s`` with map ``recv_from`` (rank ``i`` receives the
      segment from ``recv_from[i]``): ``W = (I + P) / 2`` with ``P[i, recv_from[i]] = 1``,
      i.e. ``(P x)_i = x_{recv_from[i]}``. Row-stochastic for every map; doubly
      stochastic iff ``recv_from`` is a permutation (the load-balanced case).
    * Push-sum over directed edges ``src -> dst`` where rank ``j`` has out-degree
      ``k_j``: ``W[j, j] = 1/(k_j+1)`` and ``W[dst, src] += 1/(k_src+1)``; column
      ``j`` holds the shares rank ``j`` keeps and sends, so it is column-stochastic.
      The scalar weights ``w`` go through the same matrix.
    * Hierarchical (``N`` nodes of ``G`` consecutive ranks): intra-node averaging
      ``A = kron(I_N, 1 1^T / G)`` followed by the inter-node crossover lifted to
      ranks ``B = kron(W_node, I_G)`` (local rank ``l`` of node ``a`` exchanges with
      local rank ``l`` of the peer node); the round is ``B @ A = kron(W_node, 1 1^T / G)``.

Segments
    A multi-segment schedule applies segment ``s``'s matrix to a contiguous block
    of columns; :func:`segment_slices` fixes the split (``numpy.array_split``
    sizes: the first ``d % S`` blocks get one extra column).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "segment_slices",
    "gather_matrix",
    "crossover_matrix",
    "push_sum_matrix",
    "intra_node_matrix",
    "lift_node_matrix",
    "hierarchical_matrix",
    "apply_dense",
    "is_row_stochastic",
    "is_column_stochastic",
    "is_doubly_stochastic",
]


def segment_slices(dim: int, num_segments: int) -> list[slice]:
    """Column blocks of segments ``0..num_segments-1`` in a ``dim``-column array."""
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if dim < 0:
        raise ValueError(f"dim must be >= 0, got {dim}")
    base, extra = divmod(dim, num_segments)
    bounds = np.cumsum([0] + [base + (1 if s < extra else 0) for s in range(num_segments)])
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _as_map(recv_from: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(recv_from, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"a peer map must be 1-D, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= arr.size):
        raise ValueError(f"peer map entries must lie in 0..{arr.size - 1}")
    return arr


def gather_matrix(recv_from: Sequence[int] | np.ndarray) -> np.ndarray:
    """``P`` with ``P[i, recv_from[i]] = 1``, so that ``(P @ x)[i] == x[recv_from[i]]``."""
    r = _as_map(recv_from)
    n = r.size
    p = np.zeros((n, n))
    p[np.arange(n), r] = 1.0
    return p


def crossover_matrix(recv_from: Sequence[int] | np.ndarray) -> np.ndarray:
    """``W = (I + P) / 2`` for one segment: rank ``i`` averages with ``recv_from[i]``."""
    p = gather_matrix(recv_from)
    return 0.5 * (np.eye(p.shape[0]) + p)


def push_sum_matrix(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Column-stochastic push-sum matrix for directed edges ``src[e] -> dst[e]``.

    Each rank keeps ``1/(k+1)`` and sends ``1/(k+1)`` along each of its ``k`` out-edges.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    if src.shape != dst.shape:
        raise ValueError("src and dst must have the same shape")
    share = 1.0 / (np.bincount(src, minlength=n) + 1.0)
    w = np.diag(share)
    np.add.at(w, (dst, src), share[src])
    return w


def intra_node_matrix(num_nodes: int, local_size: int) -> np.ndarray:
    """``kron(I_N, 1 1^T / G)``: every rank gets the mean of its node (consecutive ranks)."""
    return np.kron(np.eye(num_nodes), np.full((local_size, local_size), 1.0 / local_size))


def lift_node_matrix(node_matrix: np.ndarray, local_size: int) -> np.ndarray:
    """``kron(W_node, I_G)``: local rank ``l`` of node ``a`` mixes with local rank ``l`` of others."""
    return np.kron(np.asarray(node_matrix, dtype=float), np.eye(local_size))


def hierarchical_matrix(node_recv_from: Sequence[int] | np.ndarray, local_size: int) -> np.ndarray:
    """Intra-node averaging followed by the inter-node crossover, on ranks (see module doc)."""
    w_node = crossover_matrix(node_recv_from)
    intra = intra_node_matrix(w_node.shape[0], local_size)
    return lift_node_matrix(w_node, local_size) @ intra


def apply_dense(matrices: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Apply per-segment matrices ``(S, n, n)`` to the column blocks of ``x`` ``(n, d)``."""
    mats = np.asarray(matrices, dtype=float)
    x = np.asarray(x, dtype=float)
    out = np.empty_like(x)
    for w, cols in zip(mats, segment_slices(x.shape[1], mats.shape[0])):
        out[:, cols] = w @ x[:, cols]
    return out


def is_row_stochastic(w: np.ndarray, atol: float = 1e-12) -> bool:
    """Non-negative with every row summing to 1."""
    w = np.asarray(w)
    return bool(np.all(w >= 0) and np.allclose(w.sum(axis=-1), 1.0, rtol=0, atol=atol))


def is_column_stochastic(w: np.ndarray, atol: float = 1e-12) -> bool:
    """Non-negative with every column summing to 1."""
    w = np.asarray(w)
    return bool(np.all(w >= 0) and np.allclose(w.sum(axis=-2), 1.0, rtol=0, atol=atol))


def is_doubly_stochastic(w: np.ndarray, atol: float = 1e-12) -> bool:
    """Row- and column-stochastic."""
    return is_row_stochastic(w, atol) and is_column_stochastic(w, atol)
