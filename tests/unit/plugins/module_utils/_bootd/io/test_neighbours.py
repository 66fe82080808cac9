# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading the kernel's ARP cache: /proc/net/arp as Linux writes it."""

from __future__ import annotations

from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.neighbours import neighbour_mac, parse_arp_table

ARP = """IP address       HW type     Flags       HW address            Mask     Device
10.213.0.51      0x1         0x2         52:54:00:12:00:01     *        nixie0
10.213.0.52      0x1         0x0         00:00:00:00:00:00     *        nixie0
10.213.0.53      0x1         0x2         52:54:00:AB:00:03     *        nixie0
"""


def test_the_mac_of_a_resolved_address_in_lower_case():
    assert parse_arp_table(ARP, "10.213.0.51") == "52:54:00:12:00:01"
    assert parse_arp_table(ARP, "10.213.0.53") == "52:54:00:ab:00:03"


def test_an_incomplete_entry_and_an_absent_address_have_no_mac():
    assert parse_arp_table(ARP, "10.213.0.52") is None
    assert parse_arp_table(ARP, "10.213.0.5") is None
    assert parse_arp_table(ARP.splitlines()[0], "10.213.0.51") is None


def test_the_file_read_and_what_it_cannot_answer(tmp_path):
    table = tmp_path / "arp"
    table.write_text(ARP)
    assert neighbour_mac("10.213.0.51", str(table)) == "52:54:00:12:00:01"
    assert neighbour_mac("fd5e:213::51", str(table)) is None
    assert neighbour_mac("10.213.0.51", str(tmp_path / "missing")) is None
