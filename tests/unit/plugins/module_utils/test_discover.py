# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Address discovery: the pure parsers on canned input, and the order Discovery tries things in, with its I/O faked."""

from __future__ import annotations

import ipaddress
import json

import pytest

from ansible_collections.nixie.provision.plugins.module_utils import _discover
from ansible_collections.nixie.provision.plugins.module_utils._discover import Candidate, Deadline, Discovery, Neighbor
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

MAC = "52:54:00:12:34:56"
OTHER_MAC = "52:54:00:99:99:99"

# `ip -j neigh show dev nixie0` as iproute2 6.1 prints it (no "dev" key when filtered by device).
NEIGHBORS = json.dumps([
    {"dst": "10.213.0.9", "lladdr": OTHER_MAC, "state": ["REACHABLE"]},
    {"dst": "10.213.0.50", "lladdr": MAC.upper(), "state": ["STALE"]},
    {"dst": "10.213.0.77", "lladdr": MAC, "state": ["REACHABLE"]},
    {"dst": "10.213.0.78", "lladdr": MAC, "state": ["FAILED"]},
    {"dst": "10.213.0.79", "state": ["INCOMPLETE"]},
    {"dst": "10.213.0.80", "state": ["FAILED"]},
    {"dst": "fe80::5054:ff:fe12:3456", "lladdr": MAC, "router": None, "state": ["STALE"]},
    {"dst": "fd5e:213::1:77", "lladdr": MAC, "state": ["DELAY"]},
    {"dst": "10.213.0.81", "lladdr": MAC, "state": ["PERMANENT"]},
])


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("mac, expected", [
    (MAC, "fe80::5054:ff:fe12:3456"),
    # RFC 4291 appendix A's example: 34-56-78-9A-BC-DE gives the interface identifier 3656:78ff:fe9a:bcde.
    ("34-56-78-9A-BC-DE", "fe80::3656:78ff:fe9a:bcde"),
    # A locally administered address: inverting the U/L bit clears it.
    ("02:00:00:00:00:01", "fe80::ff:fe00:1"),
    ("bc24.11d0.2834", "fe80::be24:11ff:fed0:2834"),
])
def test_eui64_link_local(mac, expected):
    assert _discover.eui64_link_local(mac) == expected


def test_eui64_rejects_what_is_not_a_mac():
    with pytest.raises(ValueError, match="not a MAC address"):
        _discover.eui64_link_local("52:54:00:12:34")


def test_neighbors_of_one_mac_usable_states_ipv4_first_reachable_first():
    assert _discover.parse_neighbors(NEIGHBORS, MAC) == [
        Neighbor("10.213.0.77", "REACHABLE"),
        Neighbor("10.213.0.50", "STALE"),
        Neighbor("10.213.0.81", "PERMANENT"),
        Neighbor("fd5e:213::1:77", "DELAY"),
        Neighbor("fe80::5054:ff:fe12:3456", "STALE"),
    ]


def test_neighbors_failed_and_incomplete_entries_are_never_candidates():
    text = json.dumps([{"dst": "10.0.0.5", "lladdr": MAC, "state": ["FAILED"]},
                       {"dst": "10.0.0.6", "lladdr": MAC, "state": ["INCOMPLETE"]},
                       {"dst": "10.0.0.7", "lladdr": MAC, "state": ["NONE"]}])
    assert _discover.parse_neighbors(text, MAC) == []


def test_neighbors_of_an_empty_table_and_odd_entries():
    assert _discover.parse_neighbors("", MAC) == []
    assert _discover.parse_neighbors("[]", MAC) == []
    odd = json.dumps([{"dst": "not-an-ip", "lladdr": MAC, "state": ["REACHABLE"]},
                      {"dst": "10.0.0.1", "lladdr": "00:00:00:00", "state": ["REACHABLE"]},
                      {"lladdr": MAC, "state": ["REACHABLE"]}])
    assert _discover.parse_neighbors(odd, MAC) == []


def test_interface_networks_skips_host_and_link_scopes():
    text = json.dumps([{"ifname": "nixie0", "addr_info": [
        {"family": "inet", "local": "10.213.0.1", "prefixlen": 24, "scope": "global"},
        {"family": "inet", "local": "192.168.7.1", "prefixlen": 22, "scope": "global"},
        {"family": "inet", "local": "169.254.3.3", "prefixlen": 16, "scope": "link"},
        {"family": "inet6", "local": "fd5e:213::1", "prefixlen": 64, "scope": "global"},
    ]}])
    assert _discover.interface_networks(text) == [ipaddress.IPv4Interface("10.213.0.1/24"), ipaddress.IPv4Interface("192.168.7.1/22")]
    assert _discover.interface_networks("[]") == []


def test_sweep_targets_leave_out_the_own_address_network_and_broadcast():
    targets = _discover.sweep_targets(ipaddress.IPv4Interface("10.213.0.1/24"))
    assert len(targets) == 253
    assert "10.213.0.1" not in targets and "10.213.0.0" not in targets and "10.213.0.255" not in targets
    assert _discover.sweep_targets(ipaddress.IPv4Interface("10.0.0.1/32")) == []


def test_sweeps_up_to_a_22_and_refuses_larger_subnets_naming_the_limit():
    assert len(_discover.sweep_targets(ipaddress.IPv4Interface("10.20.0.1/22"))) == 1021
    with pytest.raises(_discover.SweepRefused) as refused:
        _discover.sweep_targets(ipaddress.IPv4Interface("10.20.0.1/21"))
    assert "10.20.0.0/21 has 2048 addresses" in str(refused.value)
    assert "at most /22" in str(refused.value) and "give the host's ip" in str(refused.value)
    with pytest.raises(_discover.SweepRefused, match="65536 addresses"):
        _discover.check_sweep_size(ipaddress.IPv4Network("10.20.0.0/16"))


def host_entry(source_ip=None, report_ip=None):
    """A boot server's answer for MAC (``_bootclient.BootServerClient.host``) after, or before, a phone-home."""
    report = None if source_ip is None else {"macs": [MAC], "ip": report_ip, "source_ip": source_ip}
    return {"host": "nixie-01", "mac": MAC, "installed": False, "released": False, "token": "claimed", "last_event": None, "report": report}


class FakeBootServer:
    """Answers ``host()`` as the boot server's client does: the protocol tests run the real one."""

    base_url = "http://10.213.0.1:8080"

    def __init__(self, entry=None, error=None):
        self.entry = entry
        self.error = error

    def host(self, mac):
        if self.error:
            raise self.error
        assert mac == MAC
        return self.entry


def test_agent_address_is_the_reported_one():
    assert _discover.agent_address(host_entry("10.213.0.100", "10.213.0.100")) == "10.213.0.100"
    assert _discover.agent_address(host_entry()) is None
    assert _discover.agent_address(None) is None


def test_agent_address_prefers_the_agents_own_report_over_the_source_address():
    assert _discover.agent_address(host_entry("192.0.2.1", "10.213.0.100")) == "10.213.0.100"
    assert _discover.agent_address(host_entry("10.213.0.100")) == "10.213.0.100"
    assert _discover.agent_address(host_entry("10.213.0.100", "garbage")) == "10.213.0.100"
    assert _discover.agent_address(host_entry("garbage", "garbage")) is None


def test_with_scope_only_for_ipv6_link_local():
    assert _discover.with_scope("fe80::1", "nixie0") == "fe80::1%nixie0"
    assert _discover.with_scope("fe80::1%eth1", "nixie0") == "fe80::1%eth1"
    assert _discover.with_scope("fd5e:213::1", "nixie0") == "fd5e:213::1"
    assert _discover.with_scope("10.0.0.1", "nixie0") == "10.0.0.1"
    assert _discover.with_scope("fe80::1", None) == "fe80::1"


def test_deadline_counts_down_and_bounds_steps():
    clock = FakeClock()
    deadline = Deadline(10, clock=clock)
    assert deadline.bounded(3) == 3 and not deadline.expired
    clock.now += 8.5
    assert deadline.bounded(3) == 1.5
    clock.now += 5
    assert deadline.remaining() == 0 and deadline.expired


class FakeLink:
    """Stands in for the interface: its addresses, the ARP answers, and the neighbour table before and after the IPv6 echo."""

    def __init__(self, monkeypatch, networks=("10.213.0.1/24",), arp=None, table=(), table_after_echo=None):
        self.calls = []
        self.networks = [ipaddress.IPv4Interface(n) for n in networks]
        self.arp = arp or {}
        self.table = list(table)
        self.table_after_echo = list(table if table_after_echo is None else table_after_echo)
        self.echoed = False
        monkeypatch.setattr(_discover, "require_interface", lambda name: None)
        monkeypatch.setattr(_discover, "_ip_json", self.ip_json)
        monkeypatch.setattr(_discover, "arp_sweep", self.arp_sweep)
        monkeypatch.setattr(_discover, "read_neighbors", self.read_neighbors)
        monkeypatch.setattr(_discover, "solicit_ipv6", self.solicit_ipv6)
        monkeypatch.setattr(_discover, "SCAPY_IMPORT_ERROR", None)

    def ip_json(self, *argv, timeout):
        self.calls.append(("ip",) + argv)
        return json.dumps([{"addr_info": [{"family": "inet", "local": str(n.ip), "prefixlen": n.network.prefixlen}
                                          for n in self.networks]}])

    def arp_sweep(self, interface, network, timeout):
        self.calls.append(("arp_sweep", str(network)))
        _discover.check_sweep_size(network.network)
        return self.arp

    def read_neighbors(self, interface, mac, timeout):
        self.calls.append(("read_neighbors",))
        return self.table_after_echo if self.echoed else self.table

    def solicit_ipv6(self, interface, timeout):
        self.calls.append(("solicit_ipv6",))
        self.echoed = True


def test_static_first_and_nothing_else_is_done_when_the_caller_stops(monkeypatch):
    link = FakeLink(monkeypatch)
    discovery = Discovery(MAC, Deadline(30), ip="10.0.0.5", interface="nixie0")
    assert next(discovery.candidates()) == Candidate("10.0.0.5", "static")
    assert link.calls == []


def test_neighbor_order_sweep_then_table_then_ipv6_then_eui64(monkeypatch):
    link = FakeLink(monkeypatch, arp={MAC: ["10.213.0.77"], OTHER_MAC: ["10.213.0.9"]},
                    table=[Neighbor("10.213.0.77", "REACHABLE"), Neighbor("10.213.0.50", "STALE")],
                    table_after_echo=[Neighbor("10.213.0.77", "REACHABLE"), Neighbor("10.213.0.50", "STALE"),
                                      Neighbor("fe80::1234", "STALE")])
    discovery = Discovery(MAC, Deadline(30), interface="nixie0", methods=["neighbor"])
    assert list(discovery.candidates()) == [
        Candidate("10.213.0.77", "arp_sweep"),
        Candidate("10.213.0.50", "neighbor"),
        Candidate("fe80::1234%nixie0", "neighbor"),
        Candidate("fe80::5054:ff:fe12:3456%nixie0", "link_local"),
    ]
    assert [call[0] for call in link.calls] == ["ip", "arp_sweep", "read_neighbors", "solicit_ipv6", "read_neighbors"]


def test_a_stale_entry_the_sweep_saw_answered_by_another_mac_is_dropped(monkeypatch):
    FakeLink(monkeypatch, arp={OTHER_MAC: ["10.213.0.50"]}, table=[Neighbor("10.213.0.50", "STALE")])
    discovery = Discovery(MAC, Deadline(30), interface="nixie0", methods=["neighbor"])
    assert [c.source for c in discovery.candidates()] == ["link_local"]
    assert not any("no ARP answer" in note for note in discovery.notes)


def test_a_too_large_subnet_is_not_swept_and_warned_about(monkeypatch):
    link = FakeLink(monkeypatch, networks=("10.20.0.1/16",), table=[Neighbor("10.20.3.4", "REACHABLE")])
    discovery = Discovery(MAC, Deadline(30), interface="nixie0", methods=["neighbor"])
    assert list(discovery.candidates())[0] == Candidate("10.20.3.4", "neighbor")
    assert len(discovery.warnings) == 1 and "10.20.0.0/16 has 65536 addresses" in discovery.warnings[0]
    assert ("arp_sweep", "10.20.0.1/16") in link.calls


def test_without_scapy_the_table_is_still_read_with_a_warning(monkeypatch):
    link = FakeLink(monkeypatch, table=[Neighbor("10.213.0.77", "REACHABLE")])
    monkeypatch.setattr(_discover, "SCAPY_IMPORT_ERROR", "Traceback: No module named 'scapy'")
    discovery = Discovery(MAC, Deadline(30), interface="nixie0", methods=["neighbor"])
    assert list(discovery.candidates())[0] == Candidate("10.213.0.77", "neighbor")
    assert "scapy" in discovery.warnings[0]
    assert not any(call[0] == "arp_sweep" for call in link.calls)


def test_agent_after_neighbor_and_notes_for_methods_without_input(monkeypatch):
    FakeLink(monkeypatch)
    discovery = Discovery(MAC, Deadline(30), server=FakeBootServer(host_entry("10.213.0.100", "10.213.0.100")))
    assert list(discovery.candidates()) == [Candidate("10.213.0.100", "agent")]
    assert discovery.notes == ["static: no ip given", "neighbor: no interface given"]


def test_nothing_found_explains_every_method():
    discovery = Discovery(MAC, Deadline(30), server=FakeBootServer(host_entry()), methods=["static", "agent"])
    assert list(discovery.candidates()) == []
    assert discovery.notes == ["static: no ip given", "agent: no phone-home from %s at the boot server http://10.213.0.1:8080" % MAC]
    unanswered = Discovery(MAC, Deadline(30), server=FakeBootServer(error=NixieError("the boot server did not answer")), methods=["agent"])
    assert list(unanswered.candidates()) == [] and unanswered.notes == ["agent: the boot server did not answer"]
    alone = Discovery(MAC, Deadline(30), methods=["agent"])
    assert list(alone.candidates()) == [] and alone.notes == ["agent: no boot server to ask"]


def test_an_unknown_method_is_refused_by_name():
    with pytest.raises(_discover.DiscoveryError, match="unknown method arp"):
        Discovery(MAC, Deadline(30), methods=["static", "arp"])


def test_no_method_starts_after_the_deadline(monkeypatch):
    clock = FakeClock()
    link = FakeLink(monkeypatch)
    discovery = Discovery(MAC, Deadline(5, clock=clock), ip="10.0.0.5", interface="nixie0")
    candidates = discovery.candidates()
    assert next(candidates).source == "static"
    clock.now += 6
    assert list(candidates) == []
    assert link.calls == []
    assert discovery.notes == ["neighbor: not tried, the timeout was reached"]


def test_a_missing_interface_is_a_configuration_error():
    with pytest.raises(_discover.DiscoveryError, match="interface: no network interface named 'nixie-nope0'"):
        Discovery(MAC, Deadline(5), interface="nixie-nope0")
