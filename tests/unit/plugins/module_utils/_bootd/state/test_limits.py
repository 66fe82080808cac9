# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Budgets: a burst per key and interval, then counts handed out once, and a bounded number of keys."""

from __future__ import annotations

import logging

from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.limits import OTHERS, Budget, LogBudget


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_burst_per_key_then_counts_once_the_interval_ends():
    clock = Clock()
    budget = Budget(2, 10.0, clock=clock)
    assert [budget.allow("a") for dummy in range(5)] == [True, True, False, False, False]
    assert budget.allow("b")
    assert budget.overdue() == []  # the interval has not ended
    clock.now = 10.0
    assert budget.overdue() == [("a", 3)]
    assert budget.overdue() == []  # handed out once
    assert budget.allow("a")  # a new interval, a new burst


def test_keys_are_bounded_new_ones_share_one_key():
    clock = Clock()
    budget = Budget(1, 10.0, max_keys=4, clock=clock)
    allowed = [budget.allow(index) for index in range(1000)]
    assert allowed[:4] == [True] * 4 and sum(allowed) == 5  # four keys, then one burst for all the others
    assert budget.refused() == [(OTHERS, 995)]


def test_log_budget_writes_a_few_lines_then_one_count(caplog):
    clock = Clock()
    log = LogBudget(logging.getLogger("test.limits"), burst=2, interval=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.limits"):
        for dummy in range(1000):
            log.log(("port 67:", "dropped"), logging.WARNING, "reply dropped")
        clock.now = 10.0
        log.log("other", logging.WARNING, "something else")
    assert [record.getMessage() for record in caplog.records] == [
        "reply dropped", "reply dropped", "port 67: dropped: 998 more like it in 10 s, not logged", "something else"]
