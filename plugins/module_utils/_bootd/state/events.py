# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-host boot progress: an append-only ``events.jsonl``, and each host's last event in the host table.

Every part of the boot server (ProxyDHCP, TFTP in its own thread, HTTP) records here, so one file
tells how far each machine got (offer, TFTP, script, kernel, initrd, phone-home) when a boot stalls;
``subscribe()`` wakes the controller's long poll on a host's next event, and feeds the status page.

Anyone on the boot network can make the server record an event (a DISCOVER from a made-up MAC, a request for
a path that does not exist), so events are budgeted per sender and step: past EVENT_BURST in EVENT_INTERVAL
they are counted, and the count is written once as a ``suppressed`` event. Senders outside the run are never
kept one by one: unknown MACs share one budget per step, clients known only by address one per address.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.limits import OTHERS, Budget
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable

# A real boot records a handful of events per step (a retransmitted DISCOVER, a second TFTP try); a flood, thousands.
EVENT_BURST = 20
EVENT_INTERVAL = 10.0
# What the events of unknown MACs are counted under, all together: a flood of random MACs is one sender.
UNKNOWN_MACS = "unknown MACs"
# Senders outside the run kept apart (clients known by address); more share one count.
STRANGER_KEYS = 1024


def read_events(run_dir: str) -> List[Dict[str, Any]]:
    """The events a server of ``run_dir`` recorded so far, oldest first: none before it wrote any, and not the line
    it may be writing. The one reader of ``events.jsonl`` for what watches a run from outside (the benchmarks)."""
    try:
        with open(contract.run_file(run_dir, contract.EVENTS_FILE), encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1]]


class EventLog:
    """Thread-safe event recorder writing one JSON object per line to ``<run_dir>/events.jsonl``.

    Each event of a host of the run also becomes that host's last event in ``table``.
    """

    def __init__(self, run_dir: str, table: HostTable, clock: Callable[[], float] = time.time,
                 budget: Optional[Budget] = None) -> None:
        self.run_dir = run_dir
        self.path = contract.run_file(run_dir, contract.EVENTS_FILE)
        self._table = table
        self._clock = clock
        # Room for every step of every host of the run on top of the bound strangers get: past its bound a Budget
        # counts new keys under one shared key, and a rack's hosts beyond it would lose their progress to it.
        self._budget = budget or Budget(EVENT_BURST, EVENT_INTERVAL, max_keys=STRANGER_KEYS + len(table.macs()) * len(contract.STEPS))
        self._lock = threading.Lock()
        self._listeners: List[Callable[[Dict[str, Any]], None]] = []
        # Line-buffered append: each event reaches the file as a whole line even if the server dies
        # right after, and a restarted server adds to the same history instead of truncating it.
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")

    def record(self, mac: Optional[str], step: str, **fields: Any) -> Optional[Dict[str, Any]]:
        """Append an event for ``mac`` (None when the sender is not known, e.g. a TFTP client by IP) and return it;
        return None when its sender has used up its budget (the event is then only counted)."""
        if step not in contract.STEPS:
            raise ValueError("unknown event step %r" % (step,))
        for key, count in self._budget.overdue():
            self._summarize(key, count)
        host = self._table.name(mac)
        if not self._budget.allow((step, mac if host is not None else fields.get("ip") or UNKNOWN_MACS)):
            return None
        return self._write(mac, host, step, fields)

    def _summarize(self, key, count):
        # Only in the file: a count is not a host's progress, and must neither become its last event nor wake a waiter.
        step, sender = (None, OTHERS) if key == OTHERS else key
        host = self._table.name(sender)
        if host is not None:
            self._write(sender, host, contract.STEP_SUPPRESSED, {"of": step, "count": count}, progress=False)
        else:
            self._write(None, None, contract.STEP_SUPPRESSED, {"of": step, "count": count, "sender": sender}, progress=False)

    def _write(self, mac, host, step, fields, progress=True):
        event = {"ts": self._clock(), "mac": mac, "host": host, "step": step}
        for key, value in fields.items():
            if key not in event:
                event[key] = value
        line = json.dumps(event, sort_keys=True, default=str)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            if not progress:
                return event
            self._table.note_event(event)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)
        return event

    def subscribe(self, listener: Callable[[Dict[str, Any]], None]) -> None:
        """Call ``listener(event)`` after each event is recorded, in the thread that records it (not for counts)."""
        with self._lock:
            self._listeners.append(listener)

    def close(self) -> None:
        for key, count in self._budget.refused():
            self._summarize(key, count)
        with self._lock:
            self._file.close()
