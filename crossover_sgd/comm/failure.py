"""The one place where a failed communication call becomes a :class:`~crossover_sgd.errors.PeerError`.

A peer that died (its connections close) or stopped answering (the process group's timeout
expires) surfaces in the surviving ranks as a ``RuntimeError`` of the backend (Gloo, NCCL, often a
``torch.distributed.DistError``) with a long, multi-line text. Wrapping the *communication calls*
(posting and waiting, not the arithmetic around them) in :func:`peer_failure` turns it into one
line naming the operation and the ranks it involved::

    with peer_failure("intra-node average", ranks):
        for work in works:
            work.wait()
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch.distributed as dist

from crossover_sgd.errors import PeerError

__all__ = ["first_line", "is_communication_failure", "peer_failure"]

# words in the text of a RuntimeError that a broken process group raises (and a bug does not)
_FAILURE_WORDS = ("gloo", "nccl", "connection", "timed out", "timeout", "peer")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message (its type's name if it has none), at most ``limit``
    characters: a longer line is cut at the last word boundary that fits and ends with ``...``
    (a single word longer than the limit, e.g. a path, is cut inside: there is no boundary)."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    if len(line) <= limit:
        return line
    room = max(limit - 3, 1)
    cut = line[:room + 1].rstrip()  # one character more: a space there means the word ends at ``room``
    if len(cut) > room:
        space = cut.rfind(" ", 0, room + 1)
        cut = cut[:space].rstrip() if space > 0 else cut[:room]
    return cut + "..."


def is_communication_failure(exc: BaseException) -> bool:
    """True for errors raised by a broken process group, not for bugs that are RuntimeErrors:
    a :class:`PeerError`, a ``torch.distributed.DistError``, or a RuntimeError whose text names
    the backend (gloo, nccl), a connection, a timeout or a peer."""
    if isinstance(exc, (PeerError, dist.DistError)):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return any(word in text for word in _FAILURE_WORDS)


def _rank() -> str:
    return str(dist.get_rank()) if dist.is_available() and dist.is_initialized() else "?"


@contextmanager
def peer_failure(what: str, peers: Sequence[int]) -> Iterator[None]:
    """Turn a RuntimeError (``torch.distributed.DistError`` included) raised inside the block into
    ``PeerError("{what} with peer rank(s) {peers} failed on rank {rank}: a peer died or stopped
    answering ({first line of the backend's message})")``, chained to the original. A PeerError
    raised inside passes unchanged. Wrap the communication calls only: every RuntimeError inside
    is taken for a lost peer."""
    try:
        yield
    except PeerError:
        raise
    except RuntimeError as exc:
        raise PeerError(f"{what} with peer rank(s) {list(peers)} failed on rank {_rank()}: "
                        f"a peer died or stopped answering ({first_line(exc)})") from exc
