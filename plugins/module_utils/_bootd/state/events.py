# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-host boot progress: an append-only ``events.jsonl`` plus the latest state per MAC.

Every part of the boot server (ProxyDHCP, TFTP in its own thread, HTTP) records here, so one file
tells how far each machine got (offer, TFTP, script, kernel, initrd, phone-home) when a boot stalls,
and ``host()`` answers the controller's ``wait_for_agent``, which ``subscribe()`` wakes on each new event.
"""

from __future__ import annotations

import json
import threading
import time

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract


class EventLog:
    """Thread-safe event recorder writing one JSON object per line to ``<run_dir>/events.jsonl``."""

    def __init__(self, run_dir, host_names=None, clock=time.time):
        self.path = contract.run_file(run_dir, contract.EVENTS_FILE)
        self._host_names = dict(host_names or {})
        self._clock = clock
        self._lock = threading.Lock()
        self._last = {}
        self._reports = {}
        self._listeners = []
        # Line-buffered append: each event reaches the file as a whole line even if the server dies
        # right after, and a restarted server adds to the same history instead of truncating it.
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")

    def record(self, mac, step, **fields):
        """Append an event for ``mac`` (None when the sender is not known, e.g. a TFTP client by IP).

        A ``phone_home`` event's ``report`` field is kept as the host's latest report.
        """
        if step not in contract.STEPS:
            raise ValueError("unknown event step %r" % (step,))
        event = {"ts": self._clock(), "mac": mac, "host": self._host_names.get(mac), "step": step}
        for key, value in fields.items():
            if key not in event:
                event[key] = value
        line = json.dumps(event, sort_keys=True, default=str)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            if mac is not None:
                self._last[mac] = event
                if step == contract.STEP_PHONE_HOME and "report" in fields:
                    self._reports[mac] = fields["report"]
            listeners = list(self._listeners)
        for listener in listeners:
            listener(mac)
        return event

    def subscribe(self, listener):
        """Call ``listener(mac)`` after each event is recorded, in the thread that records it."""
        with self._lock:
            self._listeners.append(listener)

    def snapshot(self):
        """Return ``{"hosts": {mac: {"host", "last_event", "report"}}}`` for every MAC seen or known."""
        with self._lock:
            return {"hosts": {mac: self._entry(mac) for mac in sorted(set(self._host_names) | set(self._last))}}

    def host(self, mac):
        """Return one entry of ``snapshot()``, or None for a MAC neither known nor seen."""
        with self._lock:
            if mac not in self._host_names and mac not in self._last:
                return None
            return self._entry(mac)

    def _entry(self, mac):
        return {"host": self._host_names.get(mac), "last_event": self._last.get(mac), "report": self._reports.get(mac)}

    def close(self):
        with self._lock:
            self._file.close()
