"""Who computes which of Sandblaster's portions: each replica's time per portion, measured.

The coordinator hands portions out one at a time to replicas as they report their last, so fast
replicas take more. Two rules use the measured times (an exponential average of each replica's
task-to-result seconds, :class:`PortionTimes`) to keep a slow replica off the batch's critical
path:

* a new portion: a replica takes one unless replicas at least :data:`FASTER` times faster would
  compute every portion still waiting before it finished one (then it stays idle: at the end of
  a batch a straggler's portion is the one everybody waits for);
* a backup (every portion is out): a replica copies the oldest running portion whose copies are
  all expected to finish later than its own would, or are clearly late (:data:`FASTER` times
  their expected time: a stall); portions of equally fast replicas are not computed twice for
  nothing.

A replica without a measured time yet takes what it is given. The result does not depend on any of this: the first result of a portion wins and every
sum runs in portion order.
"""

from __future__ import annotations

from typing import Dict, Iterable, List

__all__ = ["PortionTimes", "FASTER"]

#: How much faster other replicas must be for a replica to be kept off the last portions.
FASTER = 2.0


class PortionTimes:
    """Each replica's seconds per portion (exponential average with ``weight`` on the newest)."""

    def __init__(self, weight: float = 0.3):
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"weight {weight} must be in (0, 1]")
        self.weight = weight
        self.seconds: Dict[int, float] = {}
        self.sent: Dict[int, float] = {}

    def sent_to(self, replica: int, now: float) -> None:
        """A task went to ``replica`` at ``now``."""
        self.sent[replica] = now

    def result_from(self, replica: int, now: float) -> None:
        """``replica`` reported its task's result at ``now`` (a duplicate too: it measures it)."""
        sent = self.sent.pop(replica, None)
        if sent is None:
            return
        spent = now - sent
        old = self.seconds.get(replica)
        self.seconds[replica] = spent if old is None else old + self.weight * (spent - old)

    def forget(self, replica: int) -> None:
        """``replica`` was lost."""
        self.sent.pop(replica, None)

    def takes_new(self, replica: int, waiting: int, live: Iterable[int]) -> bool:
        """Whether ``replica`` should take one of ``waiting`` portions (see the module docstring)."""
        own = self.seconds.get(replica)
        if own is None:
            return True
        faster = [self.seconds[r] for r in live if r != replica and r in self.seconds
                  and self.seconds[r] * FASTER <= own]
        if not faster:
            return True
        return sum(own / t for t in faster) < waiting  # they cannot do them all meanwhile

    def backs_up(self, replica: int, holders: List[int], now: float) -> bool:
        """Whether ``replica`` (idle at ``now``) should copy a portion that ``holders`` compute:
        when each of them is clearly late (:data:`FASTER` times its expected time: a stall) or
        expected to finish after the copy would (a slower replica). A holder without a measured
        time is taken to be as fast as ``replica``."""
        own = self.seconds.get(replica)
        if own is None:
            return True
        for holder in holders:
            seconds = self.seconds.get(holder, own)
            sent = self.sent.get(holder, now)
            late = now >= sent + FASTER * seconds
            if not late and sent + seconds <= now + own:
                return False
        return True
