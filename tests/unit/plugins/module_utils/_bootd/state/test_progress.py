# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state machine behind the status page and the report: events in, each host's state and durations out."""

from __future__ import annotations

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._bootd.state import progress
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.progress import FleetProgress, replay, totals

MAC = "52:54:00:aa:00:01"
OTHER = "52:54:00:aa:00:02"
HOSTS = [("nixie-01", MAC, False), ("nixie-02", OTHER, True)]


def event(ts, step, mac=MAC, **fields):
    return dict({"ts": ts, "mac": mac, "host": "nixie-01", "step": step}, **fields)


HEALTHY = [
    event(100.0, "power", action="boot", power_state="On"),
    event(104.0, "dhcp_offer"), event(104.5, "dhcp_ack"),
    event(106.0, "tftp_start"), event(107.0, "tftp_done"), event(108.0, "script", ip="10.0.0.50"),
    event(109.0, "kernel", ip="10.0.0.50", size=1000), event(110.0, "file_sent", kind="kernel", bytes=1000, seconds=1.0, complete=True),
    event(110.0, "initrd", ip="10.0.0.50", size=4000), event(118.0, "file_sent", kind="initrd", bytes=4000, seconds=8.0, complete=True),
    event(130.0, "phone_home", ip="10.0.0.50"),
    event(131.0, "marked_installed"), event(131.5, "install", phase="started"), event(132.0, "install", phase="disko"),
    event(140.0, "install", phase="install"), event(150.0, "install", phase="reboot"), event(155.0, "install", phase="done"),
    event(160.0, "boot_local", ip="10.0.0.50"), event(161.0, "released"),
]


def test_a_healthy_boot_goes_through_every_state_in_order_and_ends_installed():
    fleet = replay(HOSTS, HEALTHY)
    row = {row["mac"]: row for row in fleet.rows(now=500.0)}[MAC]
    assert [entry["state"] for entry in row["timeline"]] == [
        "powering_on", "dhcp", "ipxe", "kernel", "initrd", "phone_home", "installing", "rebooting", "installed"]
    assert row["state"] == "installed" and row["seconds_in_state"] is None
    assert row["durations"] == {"powering_on": 4.0, "dhcp": 2.0, "ipxe": 3.0, "kernel": 1.0, "initrd": 20.0, "phone_home": 1.0,
                                "installing": 19.0, "rebooting": 5.0}
    assert row["address"] == "10.0.0.50" and row["power"] == "On" and row["phase"] == "done" and row["last_error"] is None
    assert row["transfer"] == {"size": 4000, "bytes": 4000, "started": 110.0, "seconds": 8.0, "complete": True, "rate": 500.0}


def test_the_current_state_accrues_until_now_and_a_live_count_replaces_the_bytes():
    fleet = replay(HOSTS, HEALTHY[:9])
    row = fleet.rows(now=114.0, sending={MAC: 1000})[0]
    assert row["state"] == "initrd" and row["seconds_in_state"] == 4.0 and row["durations"]["initrd"] == 4.0
    assert (row["transfer"]["bytes"], row["transfer"]["seconds"], row["transfer"]["rate"]) == (1000, 4.0, 250.0)


def test_a_power_report_that_comes_after_the_first_dhcp_request_does_not_go_back():
    row = replay(HOSTS, [event(100.0, "dhcp_offer"), event(103.0, "power", action="boot", power_state="on")]).rows(now=110.0)[0]
    assert row["state"] == "dhcp" and row["power"] == "on" and row["durations"] == {"dhcp": 10.0}


def test_a_second_attempt_after_a_failure_powers_on_again():
    events = HEALTHY[:4] + [event(200.0, "released"), event(300.0, "power", action="cycle", power_state="on"), event(305.0, "dhcp_offer")]
    row = replay(HOSTS, events).rows(now=310.0)[0]
    assert [entry["state"] for entry in row["timeline"]][-3:] == ["failed", "powering_on", "dhcp"] and row["durations"]["powering_on"] == 4.0 + 5.0


def test_the_dhcp_of_ipxe_loaded_over_tftp_stays_ipxe_and_a_reboot_starts_over():
    events = HEALTHY[:5] + [event(107.5, "dhcp_offer"), event(107.6, "dhcp_ack")] + HEALTHY[5:7] + [event(120.0, "dhcp_offer")]
    row = replay(HOSTS, events).rows(now=121.0)[0]
    assert [entry["state"] for entry in row["timeline"]] == ["powering_on", "dhcp", "ipxe", "kernel", "dhcp"]
    assert row["durations"]["ipxe"] == 3.0 and row["durations"]["dhcp"] == 2.0 + 1.0


def test_an_installed_machine_that_keeps_the_network_first_stays_installed_on_its_way_to_its_disk():
    netboot_to_disk = [event(158.0, "dhcp_offer"), event(159.0, "tftp_start"), event(159.5, "tftp_done"), event(160.0, "dhcp_offer")]
    events = HEALTHY[:-2] + netboot_to_disk + [event(161.0, "boot_local", ip="10.0.0.50"), event(161.1, "local_boot_failed", ip="10.0.0.50")]
    row = replay(HOSTS, events).rows(now=170.0)[0]
    assert row["state"] == "installed" and [entry["state"] for entry in row["timeline"]][-2:] == ["rebooting", "installed"]
    # Netbooting while nixos-anywhere still reports its reboot is that reboot too.
    row = replay(HOSTS, HEALTHY[:-3] + netboot_to_disk).rows(now=170.0)[0]
    assert row["state"] == "rebooting"


def test_a_host_installed_before_the_run_is_skipped_whatever_it_boots():
    fleet = replay(HOSTS, [event(100.0, "dhcp_offer", mac=OTHER), event(101.0, "boot_local", mac=OTHER), event(102.0, "released", mac=OTHER)])
    row = {row["mac"]: row for row in fleet.rows(now=200.0)}[OTHER]
    assert row["state"] == "skipped" and row["durations"] == {} and row["last_error"] is None


def test_a_failed_install_names_its_error_and_stays_failed():
    events = HEALTHY[:12] + [event(133.0, "install", phase="started"),
                             event(140.0, "install", phase="failed", error="nixos-anywhere failed (exit 3)"),
                             event(140.5, "marked_not_installed"), event(141.0, "released")]
    row = replay(HOSTS, events).rows(now=300.0)[0]
    assert row["state"] == "failed" and row["last_error"] == "nixos-anywhere failed (exit 3)"
    assert row["durations"]["installing"] == 9.0 and "failed" not in row["durations"]


def test_a_host_released_before_it_got_anywhere_failed_there():
    row = replay(HOSTS, HEALTHY[:4] + [event(400.0, "released")]).rows(now=500.0)[0]
    assert row["state"] == "failed" and row["last_error"] == "released by the controller while at ipxe"
    assert row["durations"]["ipxe"] == 400.0 - 106.0


def test_refusals_name_the_last_error_and_noise_changes_nothing():
    fleet = FleetProgress(HOSTS)
    fleet.apply(event(100.0, "dhcp_offer"))
    fleet.apply(event(101.0, "refused", status=403, path="/boot/52-54-00-aa-00-01.ipxe", reason="10.0.0.9 took no part"))
    fleet.apply(event(102.0, "suppressed", of="dhcp_offer", count=40))
    fleet.apply(event(103.0, "dhcp_ignored"))
    assert not fleet.apply(event(104.0, "script", mac="52:54:00:ff:ff:ff"))
    row = fleet.rows(now=110.0)[0]
    assert row["state"] == "dhcp" and row["last_error"] == "403 /boot/52-54-00-aa-00-01.ipxe: 10.0.0.9 took no part"
    assert [entry["step"] for entry in row["timeline"]] == ["dhcp_offer"]


def test_since_leaves_out_an_earlier_runs_events():
    earlier = [event(10.0, "install", phase="failed", error="old")]
    row = replay(HOSTS, earlier + HEALTHY[:2], since=50.0).rows(now=104.0)[0]
    assert row["state"] == "dhcp" and row["last_error"] is None


def test_a_machine_that_loops_keeps_a_bounded_timeline():
    fleet = FleetProgress(HOSTS)
    for index in range(3 * progress.TIMELINE_LIMIT):
        fleet.apply(event(float(index), "dhcp_offer" if index % 2 else "kernel"))
    assert len(fleet.rows(now=10000.0)[0]["timeline"]) == progress.TIMELINE_LIMIT


@pytest.mark.parametrize("state", progress.STATES)
def test_every_state_has_a_meaning(state):
    assert progress.MEANINGS[state]


def test_totals_count_states_bytes_and_the_span():
    rows = replay(HOSTS, HEALTHY).rows(now=500.0)
    assert totals(rows) == {"hosts": 2, "states": {"installed": 1, "skipped": 1}, "initrd_bytes": 4000, "seconds": 61.0}
