"""SGP's multi-peer graph (what ``--sgp-peers k`` builds) against the math of the graph, for
n = 2..40 and k = 1..4, every round of a period; against a transcription of the SGP code's
phone book where that code's duplicate/self-loop bug does not bite; k = 1 unchanged."""

from __future__ import annotations

from math import gcd
from math import log as float_log

import numpy as np
import pytest

from topology import (
    ExponentialGraph,
    NPeerExponentialGraph,
    Transfer,
    check_transfers,
    is_column_stochastic,
    is_doubly_stochastic,
    make_schedule,
)

CASES = [(n, k) for n in range(2, 41) for k in range(1, 5) if k <= n - 1]


def _paper_book(n: int, k: int) -> tuple[list[int], list[int], int]:
    """(raw offsets j*(k+1)^i, phone book modulo n without duplicates or zeros, m = number of exponents)."""
    powers = []
    p = 1
    while p <= n - 1:  # every power (k+1)^i <= n - 1, in integers
        powers.append(p)
        p *= k + 1
    raw = [j * p for p in powers for j in range(1, k + 1)]
    book: list[int] = []
    for o in raw:
        if o % n and o % n not in book:
            book.append(o % n)
    return raw, book, len(powers)


def _paper_round(n: int, k: int, t: int) -> list[int]:
    """The k offsets of round t: the next k entries of the phone book, cyclically."""
    _, book, _ = _paper_book(n, k)
    return [book[(t * k + j) % len(book)] for j in range(k)]


def _is_clean(n: int, raw: list[int]) -> bool:
    """No two raw offsets equal modulo n and none a multiple of n."""
    reduced = [o % n for o in raw]
    return 0 not in reduced and len(set(reduced)) == len(reduced)


@pytest.mark.parametrize("n,k", CASES, ids=[f"n{n}-k{k}" for n, k in CASES])
def test_peers_and_mixing_matrices_follow_the_paper_graph(n, k):
    g = NPeerExponentialGraph(n, k)
    raw, book, m = _paper_book(n, k)
    assert list(g.offsets) == book and list(g.raw_offsets) == raw
    assert g.peers_per_round == k and g.base == k + 1 and g.num_exponents == m
    assert g.period == len(book) // gcd(k, len(book))
    eye = np.eye(n)
    for t in range(2 * g.period + 1):
        offsets = _paper_round(n, k, t)
        assert list(g.offsets_at(t)) == offsets
        assert list(g.offsets_at(t + g.period)) == offsets
        out = g.out_peer_array(t)
        inn = g.in_peer_array(t)
        np.testing.assert_array_equal(out, (np.arange(n)[:, None] + offsets) % n)
        np.testing.assert_array_equal(inn, (np.arange(n)[:, None] - offsets) % n)
        for i in (0, n // 2, n - 1):
            assert g.out_peers(i, t) == [(i + o) % n for o in offsets]
            assert g.in_peers(i, t) == [(i - o) % n for o in offsets]
        sends = np.zeros((n, n), dtype=int)  # sends[i, j]: i sends to j
        np.add.at(sends, (np.repeat(np.arange(n), k), out.reshape(-1)), 1)
        receives = np.zeros((n, n), dtype=int)  # receives[j, i]: j receives from i
        np.add.at(receives, (np.repeat(np.arange(n), k), inn.reshape(-1)), 1)
        assert sends.max() == 1 and not sends.diagonal().any()  # k distinct peers, no self-loop
        assert (sends.sum(axis=1) == k).all() and (sends.sum(axis=0) == k).all()
        np.testing.assert_array_equal(sends, receives.T)  # i sends to j <=> j receives from i
        w = g.mixing_matrix(t)
        np.testing.assert_allclose(w, (eye + sends.T) / (k + 1), rtol=0, atol=1e-15)
        assert is_column_stochastic(w) and is_doubly_stochastic(w)
        check_transfers(g, t)
        assert g.transfers(n - 1, t) == [Transfer(0, tuple(g.out_peers(n - 1, t)), tuple(g.in_peers(n - 1, t)))]


def test_where_nothing_collides_round_t_uses_one_digit_j_times_base_to_the_t():
    """Where the raw offsets are distinct and non-zero modulo n, round t is {j * (k+1)^(t mod m)}
    modulo n, j = 1..k, and the period is m."""
    clean = 0
    for n, k in CASES:
        g = NPeerExponentialGraph(n, k)
        raw, _, m = _paper_book(n, k)
        if _is_clean(n, raw):
            clean += 1
            assert g.period == m
            for t in range(2 * m):
                assert list(g.offsets_at(t)) == [j * (k + 1) ** (t % m) % n for j in range(1, k + 1)]
    assert clean > len(CASES) // 2


@pytest.mark.parametrize("k,m", [(1, 1), (1, 3), (1, 5), (2, 1), (2, 2), (2, 3), (2, 4), (3, 2), (3, 3), (4, 2),
                                 (5, 2), (7, 2)])
def test_a_period_averages_exactly_when_n_is_a_power_of_k_plus_1(k, m):
    """n = (k+1)^m: every distance is one sum of digits j*(k+1)^i, so any m consecutive rounds
    give W_{t+m-1} ... W_t = 11^T / n (for k = 1 the 1-peer exponential graph's known property)."""
    n = (k + 1) ** m
    g = NPeerExponentialGraph(n, k)
    assert g.period == m
    for start in range(m):
        product = np.eye(n)
        for t in range(start, start + m):
            product = g.mixing_matrix(t) @ product
        np.testing.assert_allclose(product, np.full((n, n), 1.0 / n), rtol=0, atol=1e-12)


def test_k_equal_n_minus_1_sends_to_everyone_every_round():
    for n in (2, 3, 7, 12):
        g = NPeerExponentialGraph(n, n - 1)
        assert g.period == 1 and sorted(g.offsets_at(0)) == list(range(1, n))
        np.testing.assert_allclose(g.mixing_matrix(3), np.full((n, n), 1.0 / n))


def test_one_peer_is_exactly_todays_exponential_graph():
    """k = 1 is SGP's 1-peer graph, unchanged: offsets 2^i, one per round, in the same order."""
    for n in range(2, 300):
        new, old = NPeerExponentialGraph(n, 1), ExponentialGraph(n, 1)
        assert new.offsets == old.offsets and new.period == old.period
        for t in range(old.period + 1):
            np.testing.assert_array_equal(new.out_peer_array(t), old.out_peer_array(t))
            np.testing.assert_array_equal(new.in_peer_array(t), old.in_peer_array(t))
    g = NPeerExponentialGraph(8, 1)
    assert g.offsets == (1, 2, 4)
    assert [g.out_peers(3, t) for t in range(4)] == [[4], [5], [7], [4]]
    assert [g.in_peers(3, t) for t in range(4)] == [[2], [1], [7], [2]]
    assert NPeerExponentialGraph(5, 1).offsets == (1, 2, 4)
    assert NPeerExponentialGraph(12, 1).offsets == (1, 2, 4, 8)
    assert NPeerExponentialGraph(2, 1).offsets == (1,)


def test_pinned_multi_peer_schedules():
    g = NPeerExponentialGraph(8, 2)  # the study's 8 processes: j * 3^i, i = 0, 1
    assert g.offsets == (1, 2, 3, 6) and g.period == 2
    assert [g.out_peers(0, t) for t in range(3)] == [[1, 2], [3, 6], [1, 2]]
    assert [g.in_peers(0, t) for t in range(2)] == [[7, 6], [5, 2]]
    assert NPeerExponentialGraph(27, 2).offsets == (1, 2, 3, 6, 9, 18)
    assert NPeerExponentialGraph(32, 2).offsets == (1, 2, 3, 6, 9, 18, 27, 22)  # 54 wraps to 22
    assert NPeerExponentialGraph(16, 3).offsets == (1, 2, 3, 4, 8, 12)
    # where the raw list collides modulo n: 18 = 2 (n = 16) and 6 = 0 (n = 6) are dropped
    assert NPeerExponentialGraph(16, 2).offsets == (1, 2, 3, 6, 9)
    assert [NPeerExponentialGraph(16, 2).offsets_at(t) for t in range(3)] == [(1, 2), (3, 6), (9, 1)]
    assert NPeerExponentialGraph(6, 2).offsets == (1, 2, 3)
    assert NPeerExponentialGraph(8, 3).offsets == (1, 2, 3, 4)  # raw 1, 2, 3, 4, 8, 12
    assert 243 in NPeerExponentialGraph(244, 2).offsets  # exact exponent bound


def test_the_registry_builds_it_and_validates_k():
    assert make_schedule("sgp-npeer", 10, k=3).offsets == NPeerExponentialGraph(10, 3).offsets
    for n, k in [(4, 4), (2, 2), (9, 0)]:
        with pytest.raises(ValueError, match=f"k={k} is out of range for sgp-npeer with n={n}: need 1 <= k <= {n - 1}"):
            NPeerExponentialGraph(n, k)


# --- the SGP code (facebookresearch/stochastic_gradient_push, gossip/graph_manager.py), transcribed as
# offsets: the phone book of NPeerDynamicDirectedExponentialGraph keeps every raw offset (its membership
# test compares an int with Edge objects) and bounds the exponent with a floating-point log.


def _reference_book(n: int, k: int) -> list[int]:
    return [(j * (k + 1) ** i) % n for i in range(int(float_log(n - 1, k + 1)) + 1) for j in range(1, k + 1)]


def _reference_peers(book: list[int], n: int, k: int, rank: int, t: int) -> tuple[list[int], list[int]]:
    """get_peers after t rotations: group indices (t*k + j) mod len; in-peers = the other ranks whose
    entry at that index is ``rank``."""
    out, inn = [], []
    for j in range(k):
        index = (t * k + j) % len(book)
        out.append((rank + book[index]) % n)
        inn += [s for s in range(n) if s != rank and (s + book[index]) % n == rank]
    return out, inn


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_equals_the_sgp_code_where_its_phone_book_is_clean(k):
    differ = []
    for n in range(max(2, k + 1), 81):
        g = NPeerExponentialGraph(n, k)
        book = _reference_book(n, k)
        intended = [o for i, o in enumerate(book) if o != 0 and o not in book[:i]]
        assert list(g.offsets) == intended  # what the membership test meant, self-loops dropped
        if 0 not in book and len(set(book)) == len(book):
            for t in range(2 * len(book)):
                for rank in range(n):
                    assert (g.out_peers(rank, t), g.in_peers(rank, t)) == _reference_peers(book, n, k, rank, t)
        else:
            differ.append(n)
            if 0 in book:  # the code's self-loop: the rank is its own out-peer, and has fewer in-peers
                t = book.index(0) // k
                out, inn = _reference_peers(book, n, k, 0, t)
                assert 0 in out and len(inn) < k
    expected = {1: [], 2: [4, 5, 6, 12, 15, 16, 17, 18, 36, 45, 48, 51, 52, 53, 54]}
    if k in expected:
        assert differ == expected[k]  # the n listed in topology/exponential.py's module doc


def test_the_sgp_codes_float_log_misses_an_exponent():
    assert int(float_log(243, 3)) == 4  # so the SGP code's phone book for n = 244, k = 2 lacks 243
    assert 243 not in _reference_book(244, 2) and 243 in NPeerExponentialGraph(244, 2).offsets
