# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run's one host table: every host's name, MAC, installed flag, token state, last event and report.

ProxyDHCP and TFTP read it from their own threads while HTTP changes it, so it is changed only through its
methods, under one lock. The agent tokens live here too (``tokens.TokenStore``): installing a host revokes its
token, and the table is what answers "which hosts hold a token nobody claimed".

It also keeps the addresses each host's DHCP exchange used (``note_boot_address``, from the boot proxy), so
that a token is minted only for a script request from one of them, or from an address the kernel's neighbour table
puts at the host's MAC (``script_token``): a machine elsewhere on the segment that asks for a listed MAC's script
gets no token. The neighbour table is what holds on a lossy network, where the one DHCP REQUEST that names the
address may never reach the server; it is no easier to fool than the DHCP exchange, since both are the segment's
own frames. Two machines claiming one MAC fail the
host for good (``claim``): neither is answered, and the controller is told rather than switched over.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.tokens import TokenConflict, TokenRefused, TokenStore
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._mac import eui64_interface_id

# A host's token state, as the hosts API reports it.
TOKEN_NONE = "none"
TOKEN_AWAITING_PHONE_HOME = "awaiting_phone_home"
TOKEN_CLAIMED = "claimed"
# The addresses kept per host from its DHCP exchanges, newest last: a boot takes one or two (the firmware's
# lease, then iPXE's), and a host that reboots now and then a few more. The oldest is forgotten first.
BOOT_ADDRESSES_PER_HOST = 8


def conflict_message(mac: str) -> str:
    """What the controller is told about a host two machines answered for."""
    return "two machines answered as %s: refusing both" % mac


class DuplicateMac(NixieError):
    """Two hosts of the run share a MAC address: the server could not tell which one boots."""


def _plain(address):
    # One spelling per address, without an IPv6 zone: the proxy sees fe80::1%eth0 where HTTP may see fe80::1.
    return str(ipaddress.ip_address(address.split("%", 1)[0]))


class HostConflict(NixieError):
    """Two machines answered as one host: nothing more is done for it in this run."""


class NotItsMachine(NixieError):
    """A request on behalf of a host came from an address its DHCP exchanges did not use: it changes nothing."""


@dataclasses.dataclass
class _Row:
    host: Host
    released: bool = False
    last_event: Optional[Dict[str, Any]] = None
    report: Optional[Dict[str, Any]] = None
    boot_addresses: List[str] = dataclasses.field(default_factory=list)
    conflict: Optional[str] = None


class HostTable:
    """The hosts the server answers, by normalised MAC; thread-safe."""

    def __init__(self, hosts: Iterable[Host], tokens: Optional[TokenStore] = None,
                 neighbour_mac: Callable[[str], Optional[str]] = lambda address: None) -> None:
        """``neighbour_mac`` gives the MAC that the server's neighbour table has for an address (None if none)."""
        self.tokens = tokens or TokenStore()
        self._neighbour_mac = neighbour_mac
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
        """Boot ``mac`` from its disk (True) or into the installer again (False); either way its token is void,
        and its firmware is answered again (``local_boot_failed`` is cleared).

        Raises HostConflict for True on a host two machines answered for: the install must not go ahead.
        """
        with self._lock:
            row = self._rows[mac]
            if installed and row.conflict is not None:
                raise HostConflict(row.conflict, mac=mac)
            row.host = dataclasses.replace(row.host, installed=installed, local_boot_failed=False)
            host = row.host
        self.tokens.revoke(mac)
        return host

    def note_local_boot_failed(self, mac: str, address: str) -> Host:
        """The installed host ``mac``'s iPXE, at ``address``, could not boot the disk: stop answering its boot requests.

        Raises NotItsMachine unless the host is installed and ``address`` took part in its DHCP exchange, so that
        no other machine can silence a host that still has to be installed.
        """
        # Read before the lock is taken: the neighbour table is a file, and the DHCP and TFTP threads wait on the lock.
        at_its_mac = self._at_mac(address, mac)
        with self._lock:
            row = self._rows[mac]
            if not row.host.installed:
                raise NotItsMachine("%s is not installed: its network boot goes on" % row.host.name, mac=mac)
            if not (at_its_mac or self._ties(row, address)):
                raise NotItsMachine("%s took no part in the DHCP exchange of %s" % (address, mac), mac=mac)
            row.host = dataclasses.replace(row.host, local_boot_failed=True)
            return row.host

    def release(self, mac: str) -> List[str]:
        """The controller is done with ``mac``; return the names of the hosts it still needs the server for."""
        with self._lock:
            self._rows[mac].released = True
            self._awaiting_release.discard(mac)
            return sorted(self._rows[other].host.name for other in self._awaiting_release)

    def note_event(self, event: Mapping[str, Any]) -> None:
        """Keep ``event`` as its host's last one (and a phone-home's report as the host's report).

        The last event is the machine's: what the controller reported doing to it (``contract.CONTROLLER_STEPS``) is not.
        """
        mac = event.get("mac")
        if event.get("step") in contract.CONTROLLER_STEPS:
            return
        with self._lock:
            row = self._rows.get(mac)
            if row is None:
                return
            row.last_event = dict(event)
            if event.get("step") == contract.STEP_PHONE_HOME and "report" in event and row.conflict is None:
                row.report = event["report"]

    def note_boot_address(self, mac: str, address: str) -> None:
        """Remember that the DHCP exchange of ``mac`` (a boot client's) used ``address``; other MACs are ignored."""
        row = self._rows.get(mac)
        if row is None:
            return
        address = _plain(address)
        with self._lock:
            kept = row.boot_addresses
            if address in kept:
                kept.remove(address)
            kept.append(address)
            del kept[:-BOOT_ADDRESSES_PER_HOST]

    def mac_at(self, address: str) -> Optional[str]:
        """The one MAC whose DHCP exchange used ``address``, or None (none did, or several claim it).

        How TFTP names a client behind a DHCP relay: the kernel's ARP cache only knows the router's MAC.
        """
        address = _plain(address)
        with self._lock:
            macs = [mac for mac, row in self._rows.items() if address in row.boot_addresses]
        return macs[0] if len(macs) == 1 else None

    @staticmethod
    def _ties(row, address):
        address = _plain(address)
        if address in row.boot_addresses:
            return True
        # iPXE and EDK2 form their SLAAC addresses from the MAC (modified EUI-64); no DHCP message names them.
        parsed = ipaddress.ip_address(address)
        return parsed.version == 6 and parsed.packed[8:] == eui64_interface_id(row.host.mac)

    def _at_mac(self, address, mac):
        """Whether the neighbour table puts IPv4 ``address`` at ``mac``."""
        return self._neighbour_mac(_plain(address)) == mac

    def script_token(self, mac: str, address: str) -> str:
        """A fresh token for the script ``address`` asks for on behalf of ``mac``; raise TokenRefused saying why not.

        Only an address that the host's DHCP exchange used (or its EUI-64 SLAAC address, or one the neighbour table
        puts at its MAC) gets one: anyone may ask for any listed MAC's script, and the token is what makes the answer
        worth stealing.
        """
        at_its_mac = self._at_mac(address, mac)
        with self._lock:
            row = self._rows[mac]
            if row.conflict is not None:
                raise TokenRefused(row.conflict, mac)
            if not (at_its_mac or self._ties(row, address)):
                raise TokenRefused("%s took no part in the DHCP exchange of %s" % (address, mac), mac)
        return self.tokens.mint(mac, address)

    def claim(self, token: Union[str, bytes], reported_macs: Sequence[str], source_ip: str) -> str:
        """``tokens.claim``; a second machine's claim fails the host: both are refused from then on, its report dropped."""
        try:
            return self.tokens.claim(token, reported_macs, source_ip)
        except TokenConflict as conflict:
            with self._lock:
                row = self._rows[conflict.mac]
                row.conflict = conflict_message(conflict.mac)
                row.report = None
            self.tokens.revoke(conflict.mac)
            raise TokenConflict("%s (%s, now %s)" % (row.conflict, conflict, source_ip), conflict.mac) from None

    def awaiting_phone_home(self) -> List[str]:
        """The MACs holding a token that no phone-home has claimed yet."""
        return sorted(mac for mac in self.tokens.outstanding() if mac in self._rows)

    def entry(self, mac: str) -> Optional[Dict[str, Any]]:
        """What the hosts API answers for ``mac``, or None for a MAC outside the run.

        ``conflict`` is None, or the message saying that two machines answered as the host.
        """
        row = self._rows.get(mac)
        if row is None:
            return None
        token = self._token_state(mac)
        with self._lock:
            return self._entry(row, token)

    def snapshot(self) -> Dict[str, Dict[str, Any]]:
        """``{mac: entry}`` for every host of the run."""
        tokens = {mac: self._token_state(mac) for mac in self._rows}
        with self._lock:
            return {mac: self._entry(row, tokens[mac]) for mac, row in sorted(self._rows.items())}

    def _token_state(self, mac):
        return {"claimed": TOKEN_CLAIMED, "awaiting": TOKEN_AWAITING_PHONE_HOME, None: TOKEN_NONE}[self.tokens.state(mac)]

    @staticmethod
    def _entry(row: _Row, token: str) -> Dict[str, Any]:
        return {"host": row.host.name, "mac": row.host.mac, "installed": row.host.installed, "released": row.released,
                "token": token, "last_event": row.last_event, "report": row.report, "conflict": row.conflict}
