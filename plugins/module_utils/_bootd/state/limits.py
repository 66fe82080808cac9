# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Budgets for what a machine on the boot network can make the server write: a few lines per key and interval,
and past that a count, so a flood costs one summary line per interval instead of one line per packet.

Any machine on the segment can send what it likes, as fast as it likes, from as many MACs and ports as it likes;
what a packet costs the server (a line in ``events.jsonl`` or ``server.log``) must not grow with the packet rate.
The keys a Budget tracks are bounded too: past ``max_keys`` new keys share one key, OTHERS.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Hashable, List, Tuple

# The key every new key is counted under once a Budget tracks max_keys keys already.
OTHERS = "others"


class Budget:
    """``burst`` actions per key in each ``interval`` seconds; past that, actions are refused and counted.

    Thread-safe. ``overdue()`` hands out the counts of intervals that have ended, once each.
    """

    def __init__(self, burst: int, interval: float, max_keys: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [interval start, actions allowed, actions refused]
        self._open: Dict[Hashable, List[float]] = {}
        # Refusals of intervals that ended and were not handed out yet.
        self._ended: Dict[Hashable, int] = {}
        self._swept = clock()

    def allow(self, key: Hashable) -> bool:
        """Whether one more action of ``key`` fits its interval; if not, it is counted for ``overdue()``."""
        now = self._clock()
        with self._lock:
            entry = self._open.get(key)
            if entry is None and len(self._open) >= self._max_keys:
                self._sweep(now)
                if len(self._open) >= self._max_keys:
                    key = OTHERS
                    entry = self._open.get(key)
            if entry is None or now - entry[0] >= self.interval:
                if entry is not None:
                    self._close(key, entry)
                entry = self._open[key] = [now, 0, 0]
            if entry[1] < self.burst:
                entry[1] += 1
                return True
            entry[2] += 1
            return False

    def overdue(self) -> List[Tuple[Hashable, int]]:
        """``(key, refused)`` for every key whose interval has ended with refusals; each count is handed out once."""
        with self._lock:
            self._sweep(self._clock())
            ended, self._ended = self._ended, {}
        return sorted(ended.items(), key=str)

    def refused(self) -> List[Tuple[Hashable, int]]:
        """``(key, refused)`` for every key with refusals not handed out yet, ended intervals or not; clears them."""
        with self._lock:
            for key, entry in list(self._open.items()):
                self._close(key, entry)
            self._open.clear()
            ended, self._ended = self._ended, {}
        return sorted(ended.items(), key=str)

    def _close(self, key, entry):
        if entry[2]:
            self._ended[key] = self._ended.get(key, 0) + int(entry[2])

    def _sweep(self, now):
        # At most a few times per interval: a flood of new keys at the bound must not pay a scan per packet.
        if now - self._swept < self.interval / 4:
            return
        self._swept = now
        for key, entry in list(self._open.items()):
            if now - entry[0] >= self.interval:
                self._close(key, entry)
                del self._open[key]


class LogBudget:
    """``logger``'s lines through a Budget: ``log(key, level, message, *args)`` writes while ``key`` has budget,
    and one summary line per key and interval counts what was left out."""

    def __init__(self, logger: logging.Logger, burst: int = 5, interval: float = 10.0, max_keys: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._budget = Budget(burst, interval, max_keys, clock)

    def log(self, key: Hashable, level: int, message: str, *args: object, **kwargs: object) -> bool:
        """Log ``message % args`` at ``level`` if ``key`` has budget left; return whether it was written."""
        if not self.admit(key):
            return False
        self._logger.log(level, message, *args, **kwargs)
        return True

    def admit(self, key: Hashable) -> bool:
        """Whether one more line of ``key`` may be written (a logging filter's question); counts those that may not."""
        self._summarize(self._budget.overdue())
        return self._budget.allow(key)

    def flush(self) -> None:
        """Write the counts of every key with lines left out, interval ended or not (at shutdown)."""
        self._summarize(self._budget.refused())

    def _summarize(self, counts):
        for key, count in counts:
            self._logger.warning("%s: %d more like it in %.0f s, not logged", _describe(key), count, self._budget.interval)


def _describe(key):
    return " ".join(str(part) for part in key) if isinstance(key, tuple) else str(key)
