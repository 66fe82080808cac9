# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""nixie.provision.report through Ansible, on a run directory whose events the server's own EventLog wrote; its HTML
opened from disk in headless Chromium, with no server."""

from __future__ import annotations

import json

from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.events import EventLog
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from nixielab.ansiblerun import run_module
from nixielab.browser import Browser

HOSTS = [{"name": "nixie-01", "mac": "52:54:00:aa:00:01"}, {"name": "nixie-02", "mac": "52-54-00-AA-00-02"},
         {"name": "nixie-03", "mac": "52:54:00:aa:00:03", "installed": True}]


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def write_run(run_dir):
    """An earlier run's event, then this run's: nixie-01 installed, nixie-02 failed, nixie-03 installed already."""
    clock = Clock(500.0)
    table = HostTable([Host(host["name"], host["mac"], host.get("installed", False)) for host in HOSTS])
    log = EventLog(str(run_dir), table, clock=clock)
    log.record("52:54:00:aa:00:01", "install", phase="failed", error="an earlier run")
    for ts, mac, step, fields in (
            (1000.0, "52:54:00:aa:00:01", "dhcp_offer", {}), (1001.0, "52:54:00:aa:00:02", "dhcp_offer", {}),
            (1003.0, "52:54:00:aa:00:01", "script", {"ip": "10.0.0.51"}), (1004.0, "52:54:00:aa:00:01", "initrd", {"size": 2048}),
            (1010.0, "52:54:00:aa:00:01", "file_sent", {"kind": "initrd", "bytes": 2048, "seconds": 6.0, "complete": True}),
            (1020.0, "52:54:00:aa:00:01", "phone_home", {"ip": "10.0.0.51"}), (1021.0, "52:54:00:aa:00:01", "install", {"phase": "started"}),
            (1050.0, "52:54:00:aa:00:01", "install", {"phase": "done"}), (1060.0, "52:54:00:aa:00:02", "released", {}),
            (1061.0, "52:54:00:aa:00:03", "boot_local", {})):
        clock.now = ts
        log.record(mac, step, **fields)
    log.close()
    (run_dir / "nixie-01").mkdir()
    (run_dir / "nixie-01" / "install.log").write_text("### Installing NixOS ###\n")


def test_the_report_freezes_this_runs_states_and_opens_from_disk(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_run(run_dir)
    args = {"run_dir": str(run_dir), "hosts": HOSTS, "since": 900.0}
    checked = run_module("nixie.provision.report", args, check=True)
    assert not checked["failed"] and not (run_dir / "report.json").exists(), checked
    result = run_module("nixie.provision.report", args)
    assert not result["failed"] and result["changed"], result
    assert result["states"] == {"nixie-01": "installed", "nixie-02": "failed", "nixie-03": "skipped"}
    assert result["html"] == str(run_dir / "report.html") and result["json"] == str(run_dir / "report.json")
    report = json.loads((run_dir / "report.json").read_text())
    rows = {row["host"]: row for row in report["hosts"]}
    assert rows["nixie-01"]["durations"] == {"dhcp": 3.0, "ipxe": 1.0, "initrd": 16.0, "phone_home": 1.0, "installing": 29.0}
    assert rows["nixie-01"]["last_error"] is None, "the earlier run's failure is not this run's"
    assert rows["nixie-01"]["install_log"] == str(run_dir / "nixie-01" / "install.log") and rows["nixie-02"]["install_log"] is None
    assert rows["nixie-02"]["last_error"] == "released by the controller while at dhcp"
    assert report["totals"] == {"hosts": 3, "states": {"installed": 1, "failed": 1, "skipped": 1}, "initrd_bytes": 2048, "seconds": 61.0}

    with Browser(tmp_path / "chromium") as browser:
        browser.open((run_dir / "report.html").as_uri())
        states = browser.evaluate("Array.from(document.querySelectorAll('tr[data-host]')).map(r => r.dataset.host + ' ' + r.dataset.state)")
        assert states == ["nixie-01 installed", "nixie-02 failed", "nixie-03 skipped"]
        assert browser.evaluate("document.querySelector('a[href]').href") == (run_dir / "nixie-01" / "install.log").as_uri()
        assert "Timelines" in browser.evaluate("document.body.innerText")


def test_a_host_without_a_usable_mac_is_named(tmp_path):
    result = run_module("nixie.provision.report", {"run_dir": str(tmp_path), "hosts": [{"name": "nixie-01", "mac": "nope"}]})
    assert result["failed"] and result["msg"] == "hosts[0].mac: 'nope' (host nixie-01) is not a MAC address", result
