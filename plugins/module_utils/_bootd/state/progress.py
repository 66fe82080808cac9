# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each host's place in the whole flow, from the run's events: the state machine behind the status page and the report.

Pure: events in (as ``events.jsonl`` holds them), rows out. The server feeds it each event as it is recorded; the
report replays the file after the server is gone, and both show the same states and the same durations.

A host goes waiting → powering_on → dhcp → ipxe → kernel → initrd → phone_home → installing → rebooting → installed,
or ends failed; a host installed before the run is skipped. Steps that say nothing of progress (a refusal, an
ignored DHCP packet, a count of suppressed events) change no state; a refusal naming the host is its last error.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract

WAITING = "waiting"
POWERING_ON = "powering_on"
DHCP = "dhcp"
IPXE = "ipxe"
KERNEL = "kernel"
INITRD = "initrd"
PHONE_HOME = "phone_home"
INSTALLING = "installing"
REBOOTING = "rebooting"
INSTALLED = "installed"
FAILED = "failed"
SKIPPED = "skipped"
STATES = (WAITING, POWERING_ON, DHCP, IPXE, KERNEL, INITRD, PHONE_HOME, INSTALLING, REBOOTING, INSTALLED, FAILED, SKIPPED)
# Where a host stays: no time accrues in them, and only a new install attempt leaves failed.
FINAL_STATES = (INSTALLED, FAILED, SKIPPED)
# What each state means, for the page's legend and the README.
MEANINGS = {
    WAITING: "in the run, nothing heard from it yet",
    POWERING_ON: "the controller powered it on (BMC or Wake-on-LAN); its firmware has not asked for DHCP yet",
    DHCP: "its firmware or iPXE got a ProxyDHCP answer",
    IPXE: "iPXE is loading (TFTP) or fetched its script",
    KERNEL: "downloading the installer's kernel",
    INITRD: "downloading the installer's initrd (its bar), then booting the installer until its agent reports in",
    PHONE_HOME: "the installer booted and its agent reported in",
    INSTALLING: "nixos-anywhere runs (the phase it is in beside it)",
    REBOOTING: "nixos-anywhere rebooted it into the new system",
    INSTALLED: "nixos-anywhere finished",
    FAILED: "the install failed, or the controller gave up on it; its last error says why",
    SKIPPED: "installed before the run: told to boot its disk",
}

_STEP_STATES = {
    contract.STEP_DHCP_OFFER: DHCP, contract.STEP_DHCP_ACK: DHCP,
    contract.STEP_TFTP_START: IPXE, contract.STEP_TFTP_DONE: IPXE, contract.STEP_SCRIPT: IPXE,
    contract.STEP_KERNEL: KERNEL, contract.STEP_INITRD: INITRD, contract.STEP_PHONE_HOME: PHONE_HOME,
    contract.STEP_MARKED_INSTALLED: INSTALLING, contract.STEP_MARKED_NOT_INSTALLED: FAILED,
}
_DHCP_STEPS = (contract.STEP_DHCP_OFFER, contract.STEP_DHCP_ACK)
# What a machine that keeps the network first does on its way from the install's reboot to its disk (boot_local).
_NETBOOT_STEPS = _DHCP_STEPS + (contract.STEP_TFTP_START, contract.STEP_TFTP_DONE, contract.STEP_SCRIPT)
_PHASE_STATES = {contract.INSTALL_FAILED: FAILED, contract.INSTALL_DONE: INSTALLED, "reboot": REBOOTING}
# The steps whose "ip" is the host's own address (DHCP events carry the server's view of a lease that may not exist yet).
_ADDRESS_STEPS = (contract.STEP_SCRIPT, contract.STEP_KERNEL, contract.STEP_INITRD, contract.STEP_PHONE_HOME)
# State changes kept per host: a boot takes about ten, a machine that loops through its firmware a few per minute.
TIMELINE_LIMIT = 200


class HostProgress:
    """One host's state, the time it spent in each, its address, power, last error and initrd download."""

    def __init__(self, name: str, mac: str, installed: bool = False) -> None:
        self.name = name
        self.mac = mac
        self.state = SKIPPED if installed else WAITING
        self.since: Optional[float] = None
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self.durations: Dict[str, float] = {}
        self.timeline: List[Dict[str, Any]] = []
        self.address: Optional[str] = None
        self.power: Optional[str] = None
        self.phase: Optional[str] = None
        self.last_error: Optional[str] = None
        self.transfer: Optional[Dict[str, Any]] = None

    def _enter(self, state: str, ts: float, step: str) -> None:
        if state == self.state and self.since is not None:
            return
        self._accrue(ts)
        self.state = state
        self.since = ts
        self.timeline.append({"ts": ts, "state": state, "step": step})
        del self.timeline[:-TIMELINE_LIMIT]

    def _accrue(self, ts: float) -> None:
        if self.since is not None and self.state not in FINAL_STATES:
            self.durations[self.state] = self.durations.get(self.state, 0.0) + max(0.0, ts - self.since)

    def apply(self, event: Mapping[str, Any]) -> None:
        """Take one of this host's events, in the order they were recorded."""
        step, ts = event.get("step"), float(event.get("ts", 0.0))
        self.first = ts if self.first is None else self.first
        self.last = ts
        if event.get("ip") and step in _ADDRESS_STEPS:
            self.address = event["ip"]
        if step == contract.STEP_REFUSED:
            self.last_error = "%s %s: %s" % (event.get("status"), event.get("path", ""), event.get("reason"))
        elif step == contract.STEP_POWER:
            self._power(event, ts)
        elif step == contract.STEP_INSTALL:
            self._install(event, ts)
        elif step == contract.STEP_FILE_SENT:
            if event.get("kind") == contract.STEP_INITRD and self.transfer is not None:
                self.transfer.update(bytes=event.get("bytes", 0), seconds=event.get("seconds"), complete=bool(event.get("complete")))
        elif step == contract.STEP_RELEASED:
            if self.state not in FINAL_STATES:
                self.last_error = "released by the controller while at %s" % self.state
                self._enter(FAILED, ts, step)
        elif step in _STEP_STATES and self.state != SKIPPED:
            if step == contract.STEP_INITRD:
                self.transfer = {"size": event.get("size"), "bytes": 0, "started": ts, "seconds": None, "complete": False}
            if step == contract.STEP_MARKED_INSTALLED and self.state in (INSTALLING, REBOOTING):
                return
            # iPXE loaded over TFTP asks for DHCP itself: that is its own start, not the firmware's again.
            if step in _DHCP_STEPS and self.state == IPXE:
                return
            # Installed, a machine that keeps the network first netboots into the local-boot script: not a new boot.
            if step in _NETBOOT_STEPS and self.state in (REBOOTING, INSTALLED):
                return
            self._enter(_STEP_STATES[step], ts, step)

    def _power(self, event, ts):
        self.power = event.get("power_state")
        # The controller reports once the BMC says the machine is on, which may be after its firmware's first DHCP
        # request: a power-on starts a boot only for a host that is not booting already.
        if event.get("action") in contract.POWER_ON_ACTIONS and self.state in (WAITING, FAILED, INSTALLED):
            self._enter(POWERING_ON, ts, contract.STEP_POWER)

    def _install(self, event, ts):
        self.phase = event.get("phase")
        if self.phase == contract.INSTALL_FAILED:
            self.last_error = event.get("error") or "nixos-anywhere failed"
        self._enter(_PHASE_STATES.get(self.phase, INSTALLING), ts, contract.STEP_INSTALL)

    def row(self, now: float, sent: Optional[int] = None) -> Dict[str, Any]:
        """What the page and the report show, at time ``now``; ``sent`` is the live byte count of a running initrd download."""
        durations = dict(self.durations)
        if self.since is not None and self.state not in FINAL_STATES:
            durations[self.state] = durations.get(self.state, 0.0) + max(0.0, now - self.since)
        transfer = dict(self.transfer) if self.transfer is not None else None
        if transfer is not None:
            if sent is not None and not transfer["complete"]:
                transfer["bytes"] = sent
                transfer["seconds"] = max(0.0, now - transfer["started"])
            seconds = transfer["seconds"]
            transfer["rate"] = transfer["bytes"] / seconds if seconds else None
        return {
            "host": self.name, "mac": self.mac, "state": self.state, "since": self.since,
            "seconds_in_state": (now - self.since) if self.since is not None and self.state not in FINAL_STATES else None,
            "durations": {state: round(durations[state], 3) for state in STATES if state in durations},
            "address": self.address, "power": self.power, "phase": self.phase, "last_error": self.last_error,
            "transfer": transfer, "first_event": self.first, "last_event": self.last, "timeline": list(self.timeline),
        }


class FleetProgress:
    """Every host of the run, by MAC; events of other MACs are ignored."""

    def __init__(self, hosts: Iterable[Tuple[str, str, bool]]) -> None:
        self.hosts = {mac: HostProgress(name, mac, installed) for name, mac, installed in hosts}

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Take one event; whether it was one of the run's hosts'."""
        host = self.hosts.get(event.get("mac"))
        if host is None:
            return False
        host.apply(event)
        return True

    def rows(self, now: float, sending: Optional[Mapping[str, int]] = None) -> List[Dict[str, Any]]:
        """Each host's row, by name; ``sending`` maps MACs to the bytes of their initrd download sent so far."""
        sending = sending or {}
        return [host.row(now, sending.get(mac)) for mac, host in sorted(self.hosts.items(), key=lambda item: item[1].name)]


def replay(hosts: Iterable[Tuple[str, str, bool]], events: Iterable[Mapping[str, Any]], since: Optional[float] = None) -> FleetProgress:
    """A FleetProgress fed ``events`` (those at or after ``since``, when given), oldest first."""
    fleet = FleetProgress(hosts)
    for event in events:
        if since is None or event.get("ts", 0) >= since:
            fleet.apply(event)
    return fleet


def totals(rows: Iterable[Mapping[str, Any]]) -> Dict[str, Any]:
    """The run's totals: hosts per state, initrd bytes sent, and the span from the first event to the last."""
    rows = list(rows)
    by_state: Dict[str, int] = {}
    for row in rows:
        by_state[row["state"]] = by_state.get(row["state"], 0) + 1
    firsts = [row["first_event"] for row in rows if row["first_event"] is not None]
    lasts = [row["last_event"] for row in rows if row["last_event"] is not None]
    return {
        "hosts": len(rows), "states": by_state,
        "initrd_bytes": sum(row["transfer"]["bytes"] for row in rows if row["transfer"]),
        "seconds": round(max(lasts) - min(firsts), 3) if firsts else 0.0,
    }
