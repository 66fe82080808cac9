# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of nixie.provision.wait_for_agent (documented in plugins/modules/wait_for_agent.py)."""

from __future__ import annotations

import json
import os
import time

from ansible.errors import AnsibleActionFail
from ansible.module_utils.urls import open_url
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.nixie.provision.plugins.module_utils._mac import normalize_mac
from ansible_collections.nixie.provision.plugins.module_utils._bootd import daemon

display = Display()

# Seconds one request may wait for the host's next event; the server holds it at most 30.
LONG_POLL = 10.0


def _describe(event):
    if not event:
        return "nothing yet (no DHCP request seen from it)"
    details = ", ".join("%s=%s" % (key, event[key]) for key in ("ip", "file", "reason") if event.get(key))
    when = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    return "%s at %s%s" % (event["step"], when, " (%s)" % details if details else "")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("run_dir", "mac", "timeout"))
    _requires_connection = False

    def _host_entry(self, url, mac, since, wait):
        """The host's progress, once it has an event newer than ``since`` or ``wait`` seconds passed."""
        query = "?wait=%.3f" % wait + ("&since=%r" % since if since is not None else "")
        try:
            with open_url(url + query, timeout=wait + 10, validate_certs=False) as response:
                return json.load(response)
        except Exception as exc:  # pylint: disable=broad-except
            if getattr(exc, "code", None) == 404:
                raise AnsibleActionFail("the boot server at %s does not serve %s: it is not among the hosts it was "
                                        "started for" % (url, mac)) from None
            raise AnsibleActionFail("cannot poll the boot server at %s: %s" % (url, exc)) from exc

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._task.check_mode:
            result.update(skipped=True, msg="check mode: no boot server runs to wait for")
            return result
        dummy, args = self.validate_argument_spec(argument_spec=dict(
            run_dir=dict(type="path", required=True),
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
        run_dir = os.path.expanduser(args["run_dir"])
        state = daemon.read_state(run_dir)
        if state is None:
            raise AnsibleActionFail("no boot server runs for %s; start it with nixie.provision.server first" % run_dir)
        url = daemon.host_api_url(state, mac)
        name = task_vars.get("inventory_hostname", mac)
        started = time.monotonic()
        deadline = started + args["timeout"]
        shown = since = None
        while True:
            # The server answers as soon as the host has another event: the phone-home is seen when it happens.
            entry = self._host_entry(url, mac, since, min(max(deadline - time.monotonic(), 0), LONG_POLL))
            last = entry.get("last_event")
            if last:
                since = last["ts"]
                if last["step"] != shown:
                    shown = last["step"]
                    display.display("%s (%s): %s" % (name, mac, _describe(last)))
            report = entry.get("report")
            if report:
                break
            if time.monotonic() >= deadline:
                result.update(failed=True, elapsed=round(time.monotonic() - started, 1), last_event=last,
                              msg="no phone-home from %s within %d s; last event: %s" % (mac, args["timeout"], _describe(last)))
                return result
        address = report["ip"]
        result.update(
            changed=False,
            elapsed=round(time.monotonic() - started, 1),
            last_event=last,
            ansible_facts={
                "nixie_ip": address,
                "nixie_agent": report,
                "nixie_known_hosts": ["%s %s" % (address, key) for key in report.get("ssh_host_keys", [])],
            },
        )
        return result
