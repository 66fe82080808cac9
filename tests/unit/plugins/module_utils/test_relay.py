# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which hosts sit behind a router, and what the controller says when none of a routed host's DHCP reached the server."""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._relay import relay_message, routed_addresses

ON_LINK = [ipaddress.IPv4Network("10.213.0.0/24"), ipaddress.IPv4Network("192.0.2.0/28")]


@pytest.mark.parametrize("addresses, expected", [
    pytest.param(["10.213.1.255"], ["10.213.1.255"], id="directed-broadcast-of-another-subnet"),
    pytest.param(["10.213.1.7", "10.213.1.255"], ["10.213.1.7", "10.213.1.255"], id="static-address-and-broadcast"),
    pytest.param(["10.213.0.255", "10.213.0.40"], [], id="on-link-broadcast-and-address"),
    pytest.param(["192.0.2.15", "192.0.2.16"], ["192.0.2.16"], id="edge-of-a-small-network"),
    pytest.param(["255.255.255.255", None, "", "ff02::1", "fd5e:213::9"], [], id="nothing-that-tells"),
])
def test_routed_addresses(addresses, expected):
    assert routed_addresses(addresses, ON_LINK) == expected


def test_routed_addresses_without_any_on_link_network_are_all_routed():
    assert routed_addresses(["10.213.0.9"], []) == ["10.213.0.9"]


def test_relay_message_asks_about_the_relay_and_names_the_servers_address():
    message = relay_message("52:54:00:5f:00:03", "10.213.0.1", 30, ["10.213.1.255"])
    assert message.startswith("no DHCP request from 52:54:00:5f:00:03 reached the boot server; is the relay forwarding to 10.213.0.1?")
    assert "30 s" in message and "10.213.1.255" in message
