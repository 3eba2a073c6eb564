"""``study.bench.overhead``: the schedule floor by hand (the study itself is benchmarked, not tested, here)."""

import math

from study.bench.overhead import _interleavings, _lower_bound, _orders, schedule_floor


def test_the_orders_are_the_interleavings_of_the_cells_queues():
    queues = {"a": [("search", 1.0)] * 2, "b": [("search", 1.0)], "c": [("search", 1.0)] * 2}
    orders = list(_interleavings({cell: len(q) for cell, q in queues.items()}))
    assert len(orders) == len({tuple(o) for o in orders}) == _orders(queues) == math.factorial(5) // (2 * 1 * 2) == 30
    assert all(sorted(order) == ["a", "a", "b", "c", "c"] for order in orders)


def test_the_lower_bound_is_the_work_per_slot_or_a_cells_search_then_final():
    queues = {"a": [("search", 10.0), ("search", 10.0), ("final", 5.0)], "b": [("search", 1.0)]}
    assert _lower_bound(queues, 10) == 15.0  # a: its longest search (10) then its final (5); the work is 26 / 10
    assert _lower_bound(queues, 1) == 26.0  # one slot: all the work in a row (a alone: 10 + 10, then 5)


def test_the_schedule_floor_is_the_best_order_of_whole_trials_with_finals_after_their_search():
    # 4 equal search trials on 2 slots: two rounds
    assert schedule_floor([("a", "search", 10.0)] * 4, 2) == 20.0
    # b's final waits for both its searches (30 s on 2 slots), a's trials fill the gaps: 30 + 30
    trials = [("a", "search", 2.0), ("a", "final", 2.0), ("b", "search", 30.0), ("b", "search", 30.0),
              ("b", "final", 30.0)]
    assert schedule_floor(trials, 2) == 60.0
    assert schedule_floor(trials, 1) == 94.0  # one slot: everything in a row
    # worked by hand: C0 searches 66 s and a final 66 s, CNN searches 30 s and a final 30 s, 4 + 1 each, on
    # 2 slots. The work per slot is 240 s, but trials do not split: the best is slot A = C0, CNN, C0, CNN, CNN,
    # CNN final (0-66-96-162-192-222-252) beside slot B = C0, C0, CNN, C0 final (0-66-132-162-228): 252 s
    bench = [("C0", "search", 66.0)] * 4 + [("C0", "final", 66.0)] + [("CNN", "search", 30.0)] * 4 + [
        ("CNN", "final", 30.0)]
    assert schedule_floor(bench, 2) == 252.0
    assert schedule_floor(bench, 2, most_orders=1) == 240.0  # too many orders: the lower bound instead
