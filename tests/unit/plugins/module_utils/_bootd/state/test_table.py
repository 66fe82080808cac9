# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one host table: each host's name, installed flag, token state, last event and report, changed one way."""

from __future__ import annotations

import json

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import (
    BOOT_ADDRESSES_PER_HOST, DuplicateMac, HostConflict, HostTable, NotItsMachine,
)
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.tokens import TokenConflict, TokenRefused
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

MAC = "52:54:00:aa:00:01"
OTHER = "52:54:00:aa:00:02"
INSTALLED = "52:54:00:aa:00:03"
LEASE = "10.0.0.5"
STRANGER = "10.0.0.66"


@pytest.fixture
def table():
    return HostTable([Host("nixie-01", MAC), Host("nixie-02", OTHER), Host("nixie-03", INSTALLED, installed=True)])


def test_a_host_is_known_before_any_event(table):
    assert table.entry(MAC) == {"host": "nixie-01", "mac": MAC, "installed": False, "released": False, "token": "none",
                                "last_event": None, "report": None, "conflict": None}
    assert MAC in table and "52:54:00:ff:ff:ff" not in table
    assert table.entry("52:54:00:ff:ff:ff") is None and table.get(None) is None
    assert table.macs() == [MAC, OTHER, INSTALLED]


def test_duplicate_mac_is_refused_naming_both_hosts():
    with pytest.raises(DuplicateMac, match="node-1.*node-2.*52:54:00:aa:00:01") as refused:
        HostTable([Host("node-1", MAC), Host("node-2", "5254.00aa.0001")])
    assert isinstance(refused.value, NixieError)


def test_token_state_follows_mint_claim_and_install(table):
    table.note_boot_address(MAC, LEASE)
    token = table.script_token(MAC, LEASE)
    assert table.entry(MAC)["token"] == "awaiting_phone_home" and table.awaiting_phone_home() == [MAC]
    table.claim(token, [MAC], LEASE)
    assert table.entry(MAC)["token"] == "claimed" and table.awaiting_phone_home() == []
    table.tokens.mint(OTHER, LEASE)
    host = table.set_installed(OTHER, True)
    # Installing a host voids its token: its next boot is from disk, and a late phone-home must not be taken.
    assert host.installed and table.get(OTHER).installed and table.entry(OTHER)["token"] == "none"
    assert table.set_installed(OTHER, False).installed is False


def test_events_of_the_run_become_the_hosts_last_event_and_report(table):
    report = {"ip": "10.0.0.5", "macs": [MAC]}
    table.note_event({"ts": 1.0, "mac": MAC, "step": "script"})
    table.note_event({"ts": 2.0, "mac": MAC, "step": "phone_home", "report": report})
    table.note_event({"ts": 3.0, "mac": MAC, "step": "refused"})
    table.note_event({"ts": 4.0, "mac": "52:54:00:ff:ff:ff", "step": "dhcp_ignored"})
    entry = table.entry(MAC)
    assert entry["last_event"]["step"] == "refused" and entry["report"] == report
    assert json.loads(json.dumps(table.snapshot())) == table.snapshot()
    assert sorted(table.snapshot()) == [MAC, OTHER, INSTALLED]


def test_release_names_the_hosts_still_to_serve_and_installed_ones_never_count(table):
    assert table.release(MAC) == ["nixie-02"]
    assert table.entry(MAC)["released"] is True
    assert table.release(OTHER) == []
    assert table.release(OTHER) == []


def test_a_token_only_for_an_address_of_the_hosts_dhcp_exchange(table):
    with pytest.raises(TokenRefused, match="took no part in the DHCP exchange"):
        table.script_token(MAC, LEASE)
    table.note_boot_address(MAC, LEASE)
    table.note_boot_address("52:54:00:ff:ff:ff", STRANGER)  # not a host of the run: nothing kept
    table.script_token(MAC, LEASE)
    with pytest.raises(TokenRefused):
        table.script_token(OTHER, LEASE)
    with pytest.raises(TokenRefused):
        table.script_token(MAC, STRANGER)
    assert list(table.tokens.outstanding()[MAC]) == [LEASE]


def test_an_address_the_neighbour_table_puts_at_the_hosts_mac_is_tied_to_it_without_a_dhcp_exchange():
    # A lossy network lost the REQUEST that named LEASE; the kernel resolved LEASE to MAC to answer the client.
    neighbours = {LEASE: MAC, STRANGER: OTHER}
    table = HostTable([Host("nixie-01", MAC), Host("nixie-02", OTHER), Host("nixie-03", INSTALLED, installed=True)],
                      neighbour_mac=neighbours.get)
    table.script_token(MAC, LEASE)
    # Another machine's address, and one the table does not know, get nothing.
    with pytest.raises(TokenRefused, match="took no part in the DHCP exchange"):
        table.script_token(MAC, STRANGER)
    with pytest.raises(TokenRefused):
        table.script_token(MAC, "10.0.0.99")
    with pytest.raises(NotItsMachine):
        table.note_local_boot_failed(INSTALLED, LEASE)
    neighbours["10.0.0.7"] = INSTALLED
    assert table.note_local_boot_failed(INSTALLED, "10.0.0.7").local_boot_failed


def test_only_an_installed_hosts_own_machine_can_report_that_its_ipxe_cannot_boot_its_disk(table):
    table.note_boot_address(INSTALLED, LEASE)
    table.note_boot_address(MAC, STRANGER)
    with pytest.raises(NotItsMachine, match="took no part in the DHCP exchange"):
        table.note_local_boot_failed(INSTALLED, STRANGER)
    with pytest.raises(NotItsMachine, match="nixie-01 is not installed"):
        table.note_local_boot_failed(MAC, STRANGER)
    assert not table.get(INSTALLED).local_boot_failed and not table.get(MAC).local_boot_failed
    assert table.note_local_boot_failed(INSTALLED, LEASE).local_boot_failed
    assert table.get(INSTALLED).local_boot_failed and table.get(INSTALLED).installed
    # Marked installed again (after a reinstall) or not installed, its firmware is answered again.
    assert not table.set_installed(INSTALLED, True).local_boot_failed
    table.note_local_boot_failed(INSTALLED, LEASE)
    assert not table.set_installed(INSTALLED, False).local_boot_failed


def test_ipv6_the_hosts_eui64_addresses_and_the_dhcp_ones_without_zone(table):
    # SLAAC from the MAC (iPXE, EDK2): any prefix, the interface identifier of 52:54:00:aa:00:01.
    table.script_token(MAC, "fd5e:213::5054:ff:feaa:1")
    table.script_token(MAC, "fe80::5054:ff:feaa:1%eth0")
    with pytest.raises(TokenRefused):
        table.script_token(MAC, "fd5e:213::5054:ff:feaa:2")
    table.note_boot_address(MAC, "fe80::1234%nixie0")
    table.script_token(MAC, "fe80::1234")
    table.note_boot_address(MAC, "FD5E:213::0:50")
    table.script_token(MAC, "fd5e:213::50")


def test_boot_addresses_are_bounded_oldest_forgotten_first(table):
    for index in range(BOOT_ADDRESSES_PER_HOST + 1):
        table.note_boot_address(MAC, "10.0.1.%d" % index)
    with pytest.raises(TokenRefused):
        table.script_token(MAC, "10.0.1.0")
    table.script_token(MAC, "10.0.1.%d" % BOOT_ADDRESSES_PER_HOST)


def test_two_machines_claiming_one_mac_fail_the_host_for_good(table):
    table.note_boot_address(MAC, LEASE)
    table.note_boot_address(MAC, STRANGER)
    real = table.script_token(MAC, LEASE)
    impostor = table.script_token(MAC, STRANGER)
    table.claim(real, [MAC], LEASE)
    table.note_event({"ts": 1.0, "mac": MAC, "step": "phone_home", "report": {"ip": LEASE}})
    with pytest.raises(TokenConflict, match="two machines answered as 52:54:00:aa:00:01: refusing both"):
        table.claim(impostor, [MAC], STRANGER)
    entry = table.entry(MAC)
    assert entry["conflict"] == "two machines answered as 52:54:00:aa:00:01: refusing both"
    assert entry["report"] is None and entry["token"] == "none", "the controller must not take either report"
    # Neither machine is answered again: the real one's token is void, no new one is minted, nothing is reported.
    with pytest.raises(TokenRefused):
        table.claim(real, [MAC], LEASE)
    with pytest.raises(TokenRefused, match="refusing both"):
        table.script_token(MAC, LEASE)
    table.note_event({"ts": 2.0, "mac": MAC, "step": "phone_home", "report": {"ip": STRANGER}})
    assert table.entry(MAC)["report"] is None
    # And the install does not go ahead; marking it to boot the installer again (the rollback) still works.
    with pytest.raises(HostConflict, match="refusing both"):
        table.set_installed(MAC, True)
    assert table.set_installed(MAC, False).installed is False
    assert table.entry(MAC)["conflict"] is not None and table.entry(OTHER)["conflict"] is None


def test_a_second_claim_after_a_phone_home_from_another_address_is_a_conflict(table):
    table.note_boot_address(MAC, LEASE)
    token = table.script_token(MAC, LEASE)
    table.claim(token, [MAC], LEASE)
    with pytest.raises(TokenConflict):
        table.claim(token, [MAC], STRANGER)
    assert table.entry(MAC)["conflict"]


def test_mac_at_names_the_one_host_whose_dhcp_used_an_address(table):
    # How TFTP names a client behind a relay, whose MAC the ARP cache does not hold.
    table.note_boot_address(MAC, LEASE)
    table.note_boot_address("52:54:00:ff:ff:ff", STRANGER)
    assert table.mac_at(LEASE) == MAC and table.mac_at(STRANGER) is None
    # Two hosts claiming one address: neither is named.
    table.note_boot_address(OTHER, LEASE)
    assert table.mac_at(LEASE) is None
