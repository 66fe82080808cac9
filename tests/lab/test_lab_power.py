"""Machines powered through their BMCs by the provision playbook, end to end: the lab's Redfish emulator and IPMI
servers, the glue that runs each machine's QEMU as its BMC says, real firmware, the real agent, the recording stand-in
for nixos-anywhere, and real disk boots afterwards.

- A UEFI machine (OVMF with EDK2's own PXE client) that keeps the network first in its boot order, with a Redfish BMC,
  goes from off to installed through a one-time network boot; the power daemon sees no magic packet at all. The install's
  reboot goes straight to the disk through the BMC's one-time disk boot. Given another configuration and
  nixie_reinstall=true, the same machine, now installed, is power-cycled into a one-time network boot, reinstalled, and
  boots the new toplevel from its disk the same way.
- A SeaBIOS machine with an IPMI BMC and one woken by Wake-on-LAN install side by side, while a host whose BMC refuses
  the password fails alone; neither that password nor the right one appears in the output or under the run directory.

Each test prints power-on to installed per host (from the power request to the boot server's marked_installed).

While the Redfish machine first goes from off to installed, headless Chromium in the controller's namespace watches the
boot server's status page: the host's row moves through its states live, without a reload, and ends installed; its
screenshot is left in the run directory (docs/status-page.png is one). The run's report then holds the same states and
durations as the events.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time

import pytest
from nixielab import netboot
from nixielab.browser import Browser
from nixielab.processes import in_netns

from ansible_collections.nixie.provision.plugins.module_utils._bootd.runfiles import read_controller_secret
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.progress import STATES

pytestmark = pytest.mark.lab

WRONG_PASSWORD_ENV = "NIXIELAB_WRONG_BMC_PASSWORD"


def _power_to_installed(run: netboot.NetbootRun, machine, requested: float) -> float:
    """Seconds from the power request at `requested` to the boot server marking `machine` installed afterwards."""
    marked = [event["ts"] for event in run.events() if event["mac"] == machine.mac and event["step"] == "marked_installed" and event["ts"] > requested]
    assert marked, "%s was never marked installed after %.0f" % (machine.name, requested)
    return marked[0] - requested


def _starts(bmcs, machine, after: int = 0) -> list[tuple[str, str]]:
    """(cause, boot order) of each QEMU start the BMC glue made for `machine`, past its first `after` log entries."""
    return [(entry["cause"], entry["boot_order"]) for entry in bmcs.events(machine)[after:] if entry["event"] == "start"]


def _redfish_system(lab, machine) -> dict:
    bmcs = lab.bmcs
    status, body = lab.curl_ctl("--cacert", str(bmcs.redfish.ca_path), "-u", "admin:%s" % bmcs.password,
                                bmcs.redfish.url + bmcs.redfish.path(machine.name))
    assert status == 200, body
    return json.loads(body)


def _watch_status_page(lab, run, playbook, host) -> tuple[list[str], dict, str]:
    """Open the status page the playbook `playbook` prints in headless Chromium in the controller's namespace while it
    runs; return the states the row of `host` showed, in order, what the page said of itself once the host was
    installed, and the playbook's output read until it printed the page."""
    url, head = netboot.printed_status_url(playbook)
    assert url is not None, "the playbook printed no status page before it ended: " + head[-3000:]
    with Browser(run.directory / "chromium", prefix=tuple(in_netns(lab.ctl_ns, []))) as browser:
        browser.open(url)
        browser.evaluate("window.openedOnce = true")
        seen = []
        while playbook.poll() is None:
            state = browser.evaluate("(document.querySelector('tr[data-host=\"%s\"]') || {dataset: {}}).dataset.state" % host)
            if state and (not seen or seen[-1] != state):
                seen.append(state)
            if state == "installed":
                page = {"reloaded": browser.evaluate("window.openedOnce") is not True,
                        "updates": browser.evaluate("Number(document.body.dataset.updates)"),
                        "text": browser.evaluate("document.querySelector('tr[data-host=\"%s\"]').innerText" % host),
                        "screenshot": browser.screenshot(run.run_dir / "status-page.png")}
                return seen, page, head
            time.sleep(0.3)
    return seen, {}, head


def test_redfish_uefi_network_first_installs_then_reinstalls(lab, installer, tmp_path):
    machine = lab.add_machine("nixie-02", "52:54:00:5e:02:02", firmware="uefi", nic="virtio-native", boot_order="network-first", bmc="redfish")
    wol = lab.start_power_daemon()  # for no machine: it logs every magic packet that arrives
    bmcs = lab.start_bmcs()
    run = netboot.with_stand_in(netboot.prepare(lab, installer, [machine], tmp_path), installer)

    # (a) From off to installed, with no magic packet, watched on the status page.
    argv, environment = netboot.provision_command(lab, run)
    with subprocess.Popen(argv, env=environment, cwd=lab.run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as playbook:
        try:
            seen, page, head = _watch_status_page(lab, run, playbook, "nixie-02")
            output = head + playbook.communicate(timeout=1500)[0]
        finally:
            playbook.kill()
    print(output[-6000:])
    assert playbook.returncode == 0 and "failed=0" in netboot.recap(output)["nixie-02"], output[-6000:]
    print("status page: %s, %s updates" % (" -> ".join(seen), page.get("updates")))
    # Live, in the order of the flow (a state shorter than the browser's polling may pass unseen), with no reload.
    assert seen[-1] == "installed" and seen == sorted(seen, key=STATES.index), seen
    assert {"powering_on", "initrd", "phone_home", "installing"} <= set(seen), seen
    assert not page["reloaded"] and page["updates"] >= len(seen)
    assert re.search(r"(^|\t)on(\t|$)", page["text"]) and "install log" in page["text"], page["text"]
    assert page["screenshot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report: %s" % (run.run_dir / "report.html") in output
    # The URL's secret opens the page alone; the controller's stays out of the output.
    assert read_controller_secret(str(run.run_dir)) not in output
    _report_matches_events(run, "nixie-02")
    installed = run.toplevel("nixie-02")
    machine.wait_for_serial(r"NIXIELAB: installed " + installed, timeout=5)
    # The network boot the override asked for, then the install's reboot, which the one-time disk boot sends to the disk
    # although the machine's own order has the network first.
    assert _starts(bmcs, machine) == [("power-on", "network-first"), ("guest-reboot", "disk-first")], bmcs.events(machine)
    assert wol.packets() == []
    assert _redfish_system(lab, machine)["Boot"]["BootSourceOverrideTarget"] != "Pxe", "the override is still pending"
    requested = next(entry["time"] for entry in bmcs.events(machine) if entry["event"] == "request")
    print("Redfish (OVMF, network first): power-on to installed %.1f s, reboot to SSH %s s"
          % (_power_to_installed(run, machine, requested), netboot.host_recap(output, "nixie-02")["seconds"]["reboot"]))

    # (b) Another configuration for the same host: reinstalled through a one-time network boot and a power cycle. Its
    # disk holds the installed system, so the user lets Nixie wipe it.
    run.update_host("nixie-02", flake_attr="nixie-03", disks_may_be_wiped=True)
    reinstalled = run.toplevel("nixie-03")
    assert reinstalled != installed
    seen = len(bmcs.events(machine))
    second = netboot.provision(lab, run, extra_vars={"nixie_reinstall": True})
    print(second.stdout[-6000:])
    assert second.returncode == 0 and "failed=0" in netboot.recap(second.stdout)["nixie-02"], second.stdout[-6000:] + second.stderr[-3000:]
    # Each install from its own configuration's build.
    address = lab.site_dhcp.leases()[machine.mac]
    assert [record["argv"][1:] for record in run.stand_in_records()] == [
        run.stand_in_command("nixie-02", str(address), attribute) for attribute in ("nixie-02", "nixie-03")]
    # Both through the ssh that pins that boot's installer keys (the stand-in's ssh succeeded under strict checking).
    assert [record["ssh"] for record in run.stand_in_records()] == [run.pinning_ssh("nixie-02")] * 2
    # The fake driver's ForceRestart reads Off at once and On again 1-11 s later: on a loaded host the glue may see that Off
    # and start the machine once more, still with the override's order. Every start before the install's reboot boots the
    # network, and that reboot boots the disk.
    starts = _starts(bmcs, machine, seen)
    assert starts[0] == ("reset", "network-first") and starts[-1] == ("guest-reboot", "disk-first"), bmcs.events(machine)[seen:]
    assert all(order == "network-first" for dummy, order in starts[:-1]), bmcs.events(machine)[seen:]
    # Its disk boots the new toplevel.
    machine.wait_for_serial(r"NIXIELAB: installed " + reinstalled, timeout=5)
    assert wol.packets() == []
    assert _redfish_system(lab, machine)["Boot"]["BootSourceOverrideTarget"] != "Pxe", "the override is still pending"
    requested = next(entry["time"] for entry in bmcs.events(machine)[seen:] if entry["event"] == "request")
    print("Redfish (OVMF, network first): power cycle to reinstalled %.1f s" % _power_to_installed(run, machine, requested))


def _report_matches_events(run, host):
    """The report's states and durations for `host` are those its events in events.jsonl give."""
    report = json.loads((run.run_dir / "report.json").read_text())
    (row,) = [row for row in report["hosts"] if row["host"] == host]
    assert row["state"] == "installed" and row["install_log"] == str(run.run_dir / host / "install.log")
    events = [event for event in run.events() if event["host"] == host and event["ts"] >= report["since"]]
    stamps = {(event["ts"], event["step"]) for event in events}
    timeline = row["timeline"]
    assert all((entry["ts"], entry["step"]) in stamps for entry in timeline), (timeline, events)
    # Each state lasts from the event that entered it to the one that entered the next.
    expected = {}
    for entry, following in zip(timeline, timeline[1:]):
        expected[entry["state"]] = round(expected.get(entry["state"], 0.0) + following["ts"] - entry["ts"], 3)
    assert row["durations"] == pytest.approx(expected, abs=0.002), (row["durations"], expected)
    assert timeline[-1]["ts"] == next(event["ts"] for event in events if event.get("phase") == "done")


def test_ipmi_and_wol_install_while_a_refused_bmc_fails_alone(lab, installer, tmp_path):
    ipmi = lab.add_machine("nixie-01", "52:54:00:5e:02:11", firmware="bios", nic="e1000", bmc="ipmi")
    refused = lab.add_machine("nixie-02", "52:54:00:5e:02:12", firmware="uefi", nic="virtio-native", boot_order="disk-first", bmc="redfish")
    woken = lab.add_machine("nixie-03", "52:54:00:5e:02:13", firmware="bios", nic="e1000")
    wol = lab.start_power_daemon()
    bmcs = lab.start_bmcs()
    run = netboot.with_stand_in(netboot.prepare(lab, installer, [ipmi, refused, woken], tmp_path), installer)
    wrong = secrets.token_urlsafe(12)
    run.update_host("nixie-02", power=bmcs.power(refused, password_env=WRONG_PASSWORD_ENV))
    run.environment[WRONG_PASSWORD_ENV] = wrong
    # At -vvv Ansible prints every task's module arguments: the password must be masked there too.
    run.environment.update(ANSIBLE_STRATEGY="free", ANSIBLE_VERBOSITY="3")

    result = netboot.provision(lab, run, extra_vars={"nixie_batch_size": 2})
    output = result.stdout + result.stderr
    print(result.stdout[-6000:])
    recap = netboot.recap(result.stdout)
    assert result.returncode != 0, "nixie-02's BMC refuses the password"
    assert "failed=0" in recap["nixie-01"] and "failed=0" in recap["nixie-03"] and "failed=1" in recap["nixie-02"], recap
    # At -vvv the failed result is a JSON object over many lines.
    start = output.index("fatal: [nixie-02")
    refusal = output[start:output.index("\n}\n", start)]
    print(refusal[-3000:])
    assert bmcs.redfish.url in refusal and "401" in refusal, refusal
    for secret in (bmcs.password, wrong):
        assert secret not in output
        for path in tmp_path.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path

    for machine in (ipmi, woken):
        machine.wait_for_serial(r"NIXIELAB: installed " + run.toplevel(machine.name), timeout=5)
    assert _starts(bmcs, refused) == [] and _redfish_system(lab, refused)["PowerState"] == "Off"
    assert _starts(bmcs, ipmi)[0] == ("power-on", "network-first"), bmcs.events(ipmi)
    # Magic packets for the woken machine only (Nixie sends more than one, as packets get lost); the first powered it on.
    assert {packet["mac"] for packet in wol.packets()} == {woken.mac} and wol.packets()[0]["action"] == "started", wol.packets()

    ipmi_requested = next(entry["time"] for entry in bmcs.events(ipmi) if entry["event"] == "request")
    print("IPMI (SeaBIOS): power-on to installed %.1f s" % _power_to_installed(run, ipmi, ipmi_requested))
    print("Wake-on-LAN (SeaBIOS): power-on to installed %.1f s" % _power_to_installed(run, woken, wol.packets()[0]["time"]))
