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


def _describe(event):
    if not event:
        return "nothing yet (no DHCP request seen from it)"
    details = ", ".join("%s=%s" % (key, event[key]) for key in ("ip", "file", "reason") if event.get(key))
    when = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    return "%s at %s%s" % (event["step"], when, " (%s)" % details if details else "")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("run_dir", "mac", "timeout", "poll_interval"))
    _requires_connection = False

    def _host_entry(self, url):
        try:
            with open_url(url, timeout=5, validate_certs=False) as response:
                return json.load(response)
        except Exception as exc:  # pylint: disable=broad-except
            if getattr(exc, "code", None) == 404:
                return None
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
            poll_interval=dict(type="float", default=1.0),
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
        url = "%s/api/v1/hosts/%s" % (state["http_url"], mac)
        interval = min(max(args["poll_interval"], 0.05), 1.0)
        name = task_vars.get("inventory_hostname", mac)
        started = time.monotonic()
        deadline = started + args["timeout"]
        shown = None
        while True:
            entry = self._host_entry(url) or {}
            last = entry.get("last_event")
            if last and last.get("step") != shown:
                shown = last["step"]
                display.display("%s (%s): %s" % (name, mac, _describe(last)))
            report = entry.get("report")
            if report:
                break
            if time.monotonic() >= deadline:
                result.update(failed=True, elapsed=round(time.monotonic() - started, 1), last_event=last,
                              msg="no phone-home from %s within %d s; last event: %s" % (mac, args["timeout"], _describe(last)))
                return result
            time.sleep(interval)
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
