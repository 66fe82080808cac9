"""The lab network on its own: namespaces, addresses, isolation, site DHCP, clean teardown. No machines."""

from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest

from nixielab import LabNetwork
from nixielab.processes import start_time

pytestmark = pytest.mark.netns


def addresses(netns: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    shown = json.loads(subprocess.run(["ip", "-n", netns, "-json", "addr", "show"], capture_output=True, text=True, check=True).stdout)
    return [ipaddress.ip_interface("%s/%d" % (a["local"], a["prefixlen"])) for link in shown for a in link["addr_info"]
            if link["ifname"] != "lo" and a["scope"] == "global"]


def test_controller_reaches_the_bridge_and_nothing_routes_out(lab):
    ping = lab.run_ctl(["busybox", "ping", "-c", "1", "-W", "2", str(lab.bridge_ip4)], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert ipaddress.ip_interface("10.213.0.1/24") in addresses(lab.ctl_ns)
    assert ipaddress.ip_interface("10.213.0.2/24") in addresses(lab.lab_ns)
    for netns in (lab.ctl_ns, lab.lab_ns):
        routes = subprocess.run(["ip", "-n", netns, "route", "show", "default"], capture_output=True, text=True, check=True).stdout
        assert routes == "", "%s has a default route: %s" % (netns, routes)


def test_client_gets_an_address_from_site_dhcp(lab):
    client = lab.add_client("udhcpc", "52:54:00:99:00:01")
    address = client.dhcp4()
    assert ipaddress.IPv4Address("10.213.0.100") <= address <= ipaddress.IPv4Address("10.213.0.199")
    assert lab.site_dhcp.leases() == {"52:54:00:99:00:01": address}
    log = lab.site_dhcp.log_path.read_text()
    assert "DHCPACK(br0) %s 52:54:00:99:00:01" % address in log


def test_ipv6_only_lab_has_no_ipv4_anywhere():
    with LabNetwork(ipv4=False, ipv6=True) as lab:
        client = lab.add_client("v6", "52:54:00:99:00:02")
        for netns in (lab.ctl_ns, lab.lab_ns, client.netns):
            assert all(address.version == 6 for address in addresses(netns)), netns
        ping = lab.run_ctl(["busybox", "ping", "-6", "-c", "1", "-W", "2", str(lab.bridge_ip6)], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert "DHCPv6, IP range fd5e:213::100 -- fd5e:213::1ff" in lab.site_dhcp.log_path.read_text()


def test_two_labs_coexist_and_stop_without_leftovers():
    with LabNetwork() as first, LabNetwork() as second:
        assert {first.lab_ns, first.ctl_ns}.isdisjoint({second.lab_ns, second.ctl_ns})
        client = second.add_client("c", "52:54:00:99:00:03")
        recorded = second.tracker.records()
        assert [record["label"] for record in recorded] == ["site-dhcp"]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    for netns in (first.lab_ns, first.ctl_ns, second.lab_ns, second.ctl_ns, client.netns):
        assert netns not in listed
    assert all(start_time(record["pid"]) != record["start_time"] for record in recorded)
    assert second.tracker.records() == []
