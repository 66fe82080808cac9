# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run's one host table: every host's name, MAC, installed flag, token state, last event and report.

ProxyDHCP and TFTP read it from their own threads while HTTP changes it, so it is changed only through its
methods, under one lock. The agent tokens live here too (``tokens.TokenStore``): installing a host revokes its
token, and the table is what answers "which hosts hold a token nobody claimed".
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Dict, Iterable, List, Mapping, Optional

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.tokens import TokenStore
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

# A host's token state, as the hosts API reports it.
TOKEN_NONE = "none"
TOKEN_AWAITING_PHONE_HOME = "awaiting_phone_home"
TOKEN_CLAIMED = "claimed"


class DuplicateMac(NixieError):
    """Two hosts of the run share a MAC address: the server could not tell which one boots."""


@dataclasses.dataclass
class _Row:
    host: Host
    released: bool = False
    last_event: Optional[Dict[str, Any]] = None
    report: Optional[Dict[str, Any]] = None


class HostTable:
    """The hosts the server answers, by normalised MAC; thread-safe."""

    def __init__(self, hosts: Iterable[Host], tokens: Optional[TokenStore] = None) -> None:
        self.tokens = tokens or TokenStore()
        self._lock = threading.Lock()
        self._rows: Dict[str, _Row] = {}
        for host in hosts:
            if host.mac in self._rows:
                raise DuplicateMac("hosts %r and %r share the MAC address %s" % (self._rows[host.mac].host.name, host.name, host.mac))
            self._rows[host.mac] = _Row(host)
        # Only hosts that still had to be installed keep the server running: installed ones are answered "boot your disk".
        self._awaiting_release = {mac for mac, row in self._rows.items() if not row.host.installed}

    def __contains__(self, mac: object) -> bool:
        return mac in self._rows

    def get(self, mac: Optional[str]) -> Optional[Host]:
        """The Host with this normalised MAC as it is now (installed flag included), or None."""
        row = self._rows.get(mac) if mac is not None else None
        return row.host if row is not None else None

    def name(self, mac: Optional[str]) -> Optional[str]:
        host = self.get(mac)
        return host.name if host is not None else None

    def macs(self) -> List[str]:
        return sorted(self._rows)

    def set_installed(self, mac: str, installed: bool) -> Host:
        """Boot ``mac`` from its disk (True) or into the installer again (False); either way its token is void."""
        with self._lock:
            row = self._rows[mac]
            row.host = dataclasses.replace(row.host, installed=installed)
            host = row.host
        self.tokens.revoke(mac)
        return host

    def release(self, mac: str) -> List[str]:
        """The controller is done with ``mac``; return the names of the hosts it still needs the server for."""
        with self._lock:
            self._rows[mac].released = True
            self._awaiting_release.discard(mac)
            return sorted(self._rows[other].host.name for other in self._awaiting_release)

    def note_event(self, event: Mapping[str, Any]) -> None:
        """Keep ``event`` as its host's last one (and a phone-home's report as the host's report)."""
        mac = event.get("mac")
        with self._lock:
            row = self._rows.get(mac)
            if row is None:
                return
            row.last_event = dict(event)
            if event.get("step") == contract.STEP_PHONE_HOME and "report" in event:
                row.report = event["report"]

    def awaiting_phone_home(self) -> List[str]:
        """The MACs holding a token that no phone-home has claimed yet."""
        return sorted(mac for mac in self.tokens.outstanding() if mac in self._rows)

    def entry(self, mac: str) -> Optional[Dict[str, Any]]:
        """What the hosts API answers for ``mac``, or None for a MAC outside the run."""
        outstanding = self.tokens.outstanding()
        with self._lock:
            row = self._rows.get(mac)
            return None if row is None else self._entry(row, outstanding)

    def snapshot(self) -> Dict[str, Dict[str, Any]]:
        """``{mac: entry}`` for every host of the run."""
        outstanding = self.tokens.outstanding()
        with self._lock:
            return {mac: self._entry(row, outstanding) for mac, row in sorted(self._rows.items())}

    def _entry(self, row: _Row, outstanding: Mapping[str, str]) -> Dict[str, Any]:
        mac = row.host.mac
        if mac in outstanding:
            token = TOKEN_AWAITING_PHONE_HOME
        elif self.tokens.holds(mac):
            token = TOKEN_CLAIMED
        else:
            token = TOKEN_NONE
        return {"host": row.host.name, "mac": mac, "installed": row.host.installed, "released": row.released,
                "token": token, "last_event": row.last_event, "report": row.report}
