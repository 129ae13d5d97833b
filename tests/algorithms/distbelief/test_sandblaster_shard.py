"""Which letters a Sandblaster shard's serving loop takes (``SandblasterShard._current``).

The loop takes the coordinator's and the replicas' letters; every other letter is held by the
mailbox for its own reader. Found by a run that hung at its end (2 shards, 3 replicas, under
load): shard 1 ended its loop first and sent its model slice for the final evaluation while shard
0 still waited for a replica's DONE; shard 0's loop took the slice as a command it did not know and
dropped it, and its final evaluation then waited for that slice forever. The real runs of
test_sandblaster.py cover the rest.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from crossover_sgd.algorithms.distbelief.sandblaster_shard import SandblasterShard
from crossover_sgd.algorithms.ps import protocol
from crossover_sgd.comm.mailbox import Letter

SERVED = {protocol.OP, protocol.STOP, protocol.FETCH, protocol.PORTION, protocol.DONE}
KINDS = {name: getattr(protocol, name) for name in protocol.__all__ if isinstance(getattr(protocol, name), int)}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_the_serving_loop_takes_only_its_own_kinds(name):
    shard = SimpleNamespace(evaluation=3)
    letter = Letter(peer=1, header=[float(KINDS[name]), 3.0, 0.0])  # of the current evaluation
    assert SandblasterShard._current(shard, letter) == (KINDS[name] in SERVED), name


@pytest.mark.parametrize("kind", [protocol.FETCH, protocol.PORTION])
def test_letters_of_a_later_evaluation_wait_until_it_begins(kind):
    shard = SimpleNamespace(evaluation=3)
    assert SandblasterShard._current(shard, Letter(peer=4, header=[float(kind), 3.0, 0.0]))
    assert not SandblasterShard._current(shard, Letter(peer=4, header=[float(kind), 4.0, 0.0]))
    shard.evaluation = 4
    assert SandblasterShard._current(shard, Letter(peer=4, header=[float(kind), 4.0, 0.0]))
