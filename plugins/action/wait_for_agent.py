# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of nixie.provision.wait_for_agent (documented in plugins/modules/wait_for_agent.py)."""

from __future__ import annotations

import json
import os
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.nixie.provision.plugins.module_utils._bootclient import HostNotServed, connect
from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._hardware import hardware_facts, summary
from ansible_collections.nixie.provision.plugins.module_utils._hosts import host_name
from ansible_collections.nixie.provision.plugins.module_utils._mac import normalize_mac
from ansible_collections.nixie.provision.plugins.module_utils._netif import on_link_networks
from ansible_collections.nixie.provision.plugins.module_utils._relay import relay_message, routed_addresses
from ansible_collections.nixie.provision.plugins.module_utils._rundir import make_run_dir

display = Display()

# Seconds one request may wait for the host's next event; the server holds it at most 30.
LONG_POLL = 10.0


def _save_hardware(run_dir, name, hardware):
    """Write the host's hardware facts to its directory in the run directory; return the file's path."""
    try:
        host_name(name)
    except ValueError as exc:
        raise AnsibleActionFail("inventory_hostname: %s, so it has no directory in run_dir for its hardware report" % exc) from None
    path = contract.host_file(run_dir, name, contract.HOST_HARDWARE)
    make_run_dir(os.path.dirname(path))
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(hardware, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


def _describe(event):
    if not event:
        return "nothing yet (no DHCP request seen from it)"
    details = ", ".join("%s=%s" % (key, event[key]) for key in ("ip", "file", "reason") if event.get(key))
    when = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    return "%s at %s%s" % (event["step"], when, " (%s)" % details if details else "")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("server_url", "run_dir", "server_secret", "mac", "timeout"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._task.check_mode:
            result.update(skipped=True, msg="check mode: no boot server runs to wait for")
            return result
        dummy, args = self.validate_argument_spec(argument_spec=dict(
            server_url=dict(type="str"),
            run_dir=dict(type="path"),
            server_secret=dict(type="str", no_log=True),
            mac=dict(type="str"),
            timeout=dict(type="int", default=600),
        ))
        task_vars = task_vars or {}
        mac_value = args["mac"] or task_vars.get("nixie_mac")
        if not mac_value:
            raise AnsibleActionFail("mac: not given, and host %s has no nixie_mac variable" % task_vars.get("inventory_hostname"))
        try:
            mac = normalize_mac(str(mac_value))
        except ValueError as exc:
            raise AnsibleActionFail("mac: %s" % exc) from None
        if not (args["server_url"] or args["run_dir"]):
            raise AnsibleActionFail("server_url or run_dir: one of them is required to find the boot server")
        client = connect(args["server_url"], args["run_dir"] and os.path.expanduser(args["run_dir"]), args["server_secret"])
        if client is None:
            raise AnsibleActionFail("no boot server runs for %s; start it with nixie.provision.server first" % args["run_dir"])
        name = task_vars.get("inventory_hostname", mac)
        started = time.monotonic()
        deadline = started + args["timeout"]
        shown = since = None
        while True:
            # The server answers as soon as the host has another event: the phone-home is seen when it happens.
            try:
                entry = client.host(mac, wait=min(max(deadline - time.monotonic(), 0), LONG_POLL), since=since)
            except HostNotServed as exc:
                raise AnsibleActionFail(str(exc)) from None
            except NixieError as exc:
                raise AnsibleActionFail("cannot poll the boot server: %s" % exc) from None
            last = entry.get("last_event")
            if entry.get("conflict"):
                # The server refuses both machines from now on; the install target must not be either of them.
                result.update(failed=True, elapsed=round(time.monotonic() - started, 1), last_event=last, msg=entry["conflict"])
                return result
            if last:
                since = last["ts"]
                if last["step"] != shown:
                    shown = last["step"]
                    display.display("%s (%s): %s" % (name, mac, _describe(last)))
            report = entry.get("report")
            if report:
                break
            if time.monotonic() >= deadline:
                message = None if last else self._relay_message(client, mac, args["timeout"], task_vars)
                result.update(failed=True, elapsed=round(time.monotonic() - started, 1), last_event=last,
                              msg=message or "no phone-home from %s within %d s; last event: %s" % (mac, args["timeout"], _describe(last)))
                return result
        address = report["ip"]
        hardware = hardware_facts(report)
        hardware_summary = summary(hardware)
        display.display("%s (%s): %s" % (name, mac, hardware_summary))
        if args["run_dir"]:
            try:
                result["hardware_file"] = _save_hardware(os.path.expanduser(args["run_dir"]), name, hardware)
            except (NixieError, OSError) as exc:
                raise AnsibleActionFail("cannot save the hardware report of %s: %s" % (name, exc)) from None
        result.update(
            changed=False,
            elapsed=round(time.monotonic() - started, 1),
            last_event=last,
            ansible_facts={
                "nixie_ip": address,
                "nixie_agent": report,
                "nixie_known_hosts": ["%s %s" % (address, key) for key in report.get("ssh_host_keys", [])],
                "nixie_hardware": hardware,
                "nixie_hardware_summary": hardware_summary,
            },
        )
        return result

    @staticmethod
    def _relay_message(client, mac, timeout, task_vars):
        """The relay's likely fault, for a host that sits behind a router and none of whose DHCP reached the server; else None."""
        # The server runs here, on the controller: its interface's routes tell which of the host's addresses are routed.
        try:
            state = client.state()
            routed = routed_addresses((task_vars.get("nixie_ip"), task_vars.get("nixie_wol_broadcast")), on_link_networks(state["interface"]))
        except (NixieError, OSError, KeyError) as exc:
            display.warning("cannot tell whether %s sits behind a router: %s" % (mac, exc))
            return None
        return relay_message(mac, state["address"], timeout, routed) if routed else None
