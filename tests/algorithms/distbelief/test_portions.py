"""Sandblaster's portion rules (crossover_sgd.algorithms.distbelief.portions) on constructed times:
a straggler stays off the last portions, a backup is made only for a slower or a stalled copy."""

from __future__ import annotations

import pytest

from crossover_sgd.algorithms.distbelief.portions import FASTER, PortionTimes


def measured(**seconds: float) -> PortionTimes:
    """Replicas r1, r2, ... with one measured portion time each (replica number from the name)."""
    times = PortionTimes()
    for name, spent in seconds.items():
        times.sent_to(int(name[1:]), 100.0)
        times.result_from(int(name[1:]), 100.0 + spent)
    return times


def test_times_are_an_exponential_average_of_task_to_result():
    times = PortionTimes(weight=0.5)
    times.sent_to(1, 0.0)
    times.result_from(1, 2.0)
    times.sent_to(1, 10.0)
    times.result_from(1, 14.0)
    assert times.seconds[1] == pytest.approx(3.0)  # 2 + 0.5 * (4 - 2)
    times.result_from(1, 20.0)  # no task out: nothing measured
    assert times.seconds[1] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="weight 0"):
        PortionTimes(weight=0)


def test_a_straggler_takes_a_new_portion_only_while_the_fast_ones_cannot_do_them_all():
    times = measured(r1=1.0, r2=1.0, r3=4.0)  # r3 is 4x slower: r1 and r2 do 8 portions meanwhile
    live = [1, 2, 3]
    assert times.takes_new(3, 9, live) and not times.takes_new(3, 8, live) and not times.takes_new(3, 1, live)
    # the fast ones always take one (nobody is FASTER times faster than them), so nothing stalls
    assert all(times.takes_new(r, 1, live) for r in (1, 2))
    # a replica only a little slower is not kept off
    assert measured(r1=1.0, r2=FASTER * 0.9).takes_new(2, 1, [1, 2])
    # without the fast ones (lost) the straggler takes everything; unmeasured replicas take what comes
    assert times.takes_new(3, 1, [3]) and PortionTimes().takes_new(5, 1, [5, 6])


def test_a_backup_only_for_a_slower_or_a_clearly_late_copy():
    times = measured(r1=1.0, r2=1.0, r3=4.0)
    times.sent_to(2, 10.0)  # r2 (fast) computes a portion since t = 10
    times.sent_to(3, 10.0)  # r3 (slow) another one
    assert not times.backs_up(1, [2], 10.5)  # r2 ends at 11, a copy on r1 at 11.5: no
    assert times.backs_up(1, [3], 10.5)  # r3 ends at 14: the copy wins
    assert not times.backs_up(1, [2, 3], 10.5)  # one of the copies ends first: no
    assert times.backs_up(1, [2], 10.0 + FASTER * 1.0)  # r2 is clearly late (a stall): a copy
    assert not times.backs_up(3, [2], 10.5)  # the slow one never copies a fast one's portion
    # an unmeasured holder is taken to be as fast as the idle replica
    times.sent_to(7, 10.0)
    assert not times.backs_up(1, [7], 10.5) and times.backs_up(1, [7], 12.0)
    assert PortionTimes().backs_up(1, [2], 0.0)  # nothing measured: copies as before
