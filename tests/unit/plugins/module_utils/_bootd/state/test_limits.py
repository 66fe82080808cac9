# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Budgets: a burst per key and interval, then counts handed out once, and a bounded number of keys."""

from __future__ import annotations

import logging
import os

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


def test_the_server_raises_its_file_limit_or_refuses_to_start_saying_why():
    import resource  # pylint: disable=import-outside-toplevel
    from ansible_collections.nixie.provision.plugins.module_utils._bootd import server  # pylint: disable=import-outside-toplevel

    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    # A fleet's run needs a TFTP socket per host on top of a rack's: 250 machines booting at once must not wait for
    # slots (bench P5), and the file limit grows with them.
    assert server.tftp_transfers(250) >= 250 + server.tftp_transfers(0)
    needed = server.files_needed(250)
    assert needed >= server.files_needed(0) + 2 * 250
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, before[1]))
        assert server.ensure_file_limit(250) == needed
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == needed
        if before[1] != resource.RLIM_INFINITY and before[1] < 1 << 20:
            try:
                # More hosts than the hard limit has files: two files each cannot fit.
                server.ensure_file_limit(before[1] if os.geteuid() else 1 << 40)
            except server.ServerError as refused:
                assert "open files" in str(refused) and "ulimit -n" in str(refused)
            else:
                raise AssertionError("a limit it cannot reach must refuse the start")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)
