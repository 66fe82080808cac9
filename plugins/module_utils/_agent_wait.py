# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for one host's installer to phone home to its boot server, and turn its report into the host's facts.

Runs where the boot server runs (the host's controller): the server's run directory holds the secret, and the routes
of the server's interface tell a host behind a router from one whose machine never powered on.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, Iterable, Optional

from ansible_collections.nixie.provision.plugins.module_utils._bootclient import BootServerClient, HostNotServed, connect
from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._hardware import hardware_facts, summary
from ansible_collections.nixie.provision.plugins.module_utils._hosts import host_name
from ansible_collections.nixie.provision.plugins.module_utils._mac import normalize_mac
from ansible_collections.nixie.provision.plugins.module_utils._netif import on_link_networks
from ansible_collections.nixie.provision.plugins.module_utils._relay import relay_message, routed_addresses
from ansible_collections.nixie.provision.plugins.module_utils._rundir import make_run_dir

# nixie.provision.wait_for_agent's options (documented in plugins/modules/wait_for_agent.py). Its action plugin fills
# mac, name and known_addresses from the host's variables.
ARGUMENT_SPEC = dict(
    server_url=dict(type="str"),
    run_dir=dict(type="path"),
    server_secret=dict(type="str", no_log=True),
    mac=dict(type="str"),
    name=dict(type="str"),
    known_addresses=dict(type="list", elements="str"),
    timeout=dict(type="int", default=600),
)

# Seconds one request may wait for the host's next event; the server holds it at most 30.
LONG_POLL = 10.0


class AgentWaitError(NixieError):
    """The wait cannot go on: the server does not serve the host, does not answer, or the report cannot be saved."""


def _describe_event(event: Optional[Dict[str, Any]]) -> str:
    """One host's boot step as the wait shows it, such as ``script at 10:00:01 (ip=10.0.0.5)``."""
    if not event:
        return "nothing yet (no DHCP request seen from it)"
    details = ", ".join("%s=%s" % (key, event[key]) for key in ("ip", "file", "reason") if event.get(key))
    when = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    return "%s at %s%s" % (event["step"], when, " (%s)" % details if details else "")


def wait_for_agent(params: Dict[str, Any], show: Callable[[str], None], warn: Callable[[str], None]) -> Dict[str, Any]:
    """The task result of nixie.provision.wait_for_agent for ``params`` (validated against ARGUMENT_SPEC, with ``mac``
    given), wherever it runs; see _wait_for_phone_home. Raises AgentWaitError when the wait cannot start or go on."""
    try:
        mac = normalize_mac(str(params["mac"]))
    except ValueError as exc:
        raise AgentWaitError("mac: %s" % exc) from None
    if not (params["server_url"] or params["run_dir"]):
        raise AgentWaitError("server_url or run_dir: one of them is required to find the boot server")
    run_dir = params["run_dir"] and os.path.expanduser(params["run_dir"])
    client = connect(params["server_url"], run_dir, params["server_secret"])
    if client is None:
        raise AgentWaitError("no boot server runs for %s; start it with nixie.provision.server first" % params["run_dir"])
    return _wait_for_phone_home(client, mac, params["name"] or mac, params["timeout"], run_dir, params["known_addresses"] or (), show, warn)


def _wait_for_phone_home(client: BootServerClient, mac: str, name: str, timeout: int, run_dir: Optional[str],
                         known_addresses: Iterable[Optional[str]], show: Callable[[str], None], warn: Callable[[str], None]) -> Dict[str, Any]:
    """The task result for host ``name`` (``mac``) once its agent phoned home, or once ``timeout`` s passed without.

    ``show`` gets a line each time the host's boot step changes, and ``warn`` what the wait could not find out.
    ``known_addresses`` (its static address, its Wake-on-LAN broadcast) tell whether a host none of whose DHCP
    arrived sits behind a router. With ``run_dir``, the host's hardware is saved there. Raises AgentWaitError when
    the wait cannot go on.
    """
    started = time.monotonic()
    deadline = started + timeout
    shown = since = None
    while True:
        # The server answers as soon as the host has another event: the phone-home is seen when it happens.
        try:
            entry = client.host(mac, wait=min(max(deadline - time.monotonic(), 0), LONG_POLL), since=since)
        except HostNotServed as exc:
            raise AgentWaitError(str(exc)) from None
        except NixieError as exc:
            raise AgentWaitError("cannot poll the boot server: %s" % exc) from None
        last = entry.get("last_event")
        if entry.get("conflict"):
            # The server refuses both machines from now on; the install target must not be either of them.
            return dict(failed=True, elapsed=round(time.monotonic() - started, 1), last_event=last, msg=entry["conflict"])
        if last:
            since = last["ts"]
            if last["step"] != shown:
                shown = last["step"]
                show("%s (%s): %s" % (name, mac, _describe_event(last)))
        report = entry.get("report")
        if report:
            break
        if time.monotonic() >= deadline:
            message = None if last else _relay_message(client, mac, timeout, known_addresses, warn)
            return dict(failed=True, elapsed=round(time.monotonic() - started, 1), last_event=last,
                        msg=message or "no phone-home from %s within %d s; last event: %s" % (mac, timeout, _describe_event(last)))
    hardware = hardware_facts(report)
    hardware_summary = summary(hardware)
    show("%s (%s): %s" % (name, mac, hardware_summary))
    result: Dict[str, Any] = dict(changed=False, elapsed=round(time.monotonic() - started, 1), last_event=last)
    if run_dir:
        result["hardware_file"] = _save_hardware(run_dir, name, hardware)
    result["ansible_facts"] = {
        "nixie_ip": report["ip"],
        "nixie_agent": report,
        "nixie_known_hosts": ["%s %s" % (report["ip"], key) for key in report.get("ssh_host_keys", [])],
        "nixie_hardware": hardware,
        "nixie_hardware_summary": hardware_summary,
    }
    return result


def _save_hardware(run_dir: str, name: str, hardware: Dict[str, Any]) -> str:
    """Write the host's hardware facts to its directory in the run directory; return the file's path."""
    try:
        host_name(name)
    except ValueError as exc:
        raise AgentWaitError("inventory_hostname: %s, so it has no directory in run_dir for its hardware report" % exc) from None
    path = contract.host_file(run_dir, name, contract.HOST_HARDWARE)
    try:
        make_run_dir(os.path.dirname(path))
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(hardware, handle, indent=2, sort_keys=True)
            handle.write("\n")
    except (NixieError, OSError) as exc:
        raise AgentWaitError("cannot save the hardware report of %s: %s" % (name, exc)) from None
    return path


def _relay_message(client: BootServerClient, mac: str, timeout: int, known_addresses: Iterable[Optional[str]],
                   warn: Callable[[str], None]) -> Optional[str]:
    """The relay's likely fault, for a host that sits behind a router and none of whose DHCP reached the server; else None."""
    try:
        state = client.state()
        routed = routed_addresses(known_addresses, on_link_networks(state["interface"]))
    except (NixieError, OSError, KeyError) as exc:
        warn("cannot tell whether %s sits behind a router: %s" % (mac, exc))
        return None
    return relay_message(mac, state["address"], timeout, routed) if routed else None
