# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-host boot progress: an append-only ``events.jsonl``, and each host's last event in the host table.

Every part of the boot server (ProxyDHCP, TFTP in its own thread, HTTP) records here, so one file
tells how far each machine got (offer, TFTP, script, kernel, initrd, phone-home) when a boot stalls;
``subscribe()`` wakes the controller's long poll on a host's next event.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable


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

    def __init__(self, run_dir: str, table: HostTable, clock: Callable[[], float] = time.time) -> None:
        self.path = contract.run_file(run_dir, contract.EVENTS_FILE)
        self._table = table
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: List[Callable[[Optional[str]], None]] = []
        # Line-buffered append: each event reaches the file as a whole line even if the server dies
        # right after, and a restarted server adds to the same history instead of truncating it.
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")

    def record(self, mac: Optional[str], step: str, **fields: Any) -> Dict[str, Any]:
        """Append an event for ``mac`` (None when the sender is not known, e.g. a TFTP client by IP)."""
        if step not in contract.STEPS:
            raise ValueError("unknown event step %r" % (step,))
        event = {"ts": self._clock(), "mac": mac, "host": self._table.name(mac), "step": step}
        for key, value in fields.items():
            if key not in event:
                event[key] = value
        line = json.dumps(event, sort_keys=True, default=str)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            self._table.note_event(event)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(mac)
        return event

    def subscribe(self, listener: Callable[[Optional[str]], None]) -> None:
        """Call ``listener(mac)`` after each event is recorded, in the thread that records it."""
        with self._lock:
            self._listeners.append(listener)

    def close(self) -> None:
        with self._lock:
            self._file.close()
