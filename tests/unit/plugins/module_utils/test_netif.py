# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which IPv6 address of an interface the boot server takes, from /proc/net/if_inet6 lines."""

from __future__ import annotations

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._netif import InterfaceError, interface_ipv6

# address, ifindex, prefix length, scope, flags, name: as the kernel lists them, the newest first.
SLAAC = "fd5e0213000000003c8e5dfffe1a2b3c 01 40 00 00       lo"
PRIVACY = "fd5e0213000000001122334455667788 01 40 00 01       lo"
STATIC = "fd5e0213000000000000000000000001 01 40 00 80       lo"
TENTATIVE_STATIC = "fd5e0213000000000000000000000002 01 40 00 c0       lo"
LINK_LOCAL = "fe800000000000003c8e5dfffe1a2b3c 01 40 20 80       lo"
OTHER_INTERFACE = "fd5e0213000000000000000000000009 02 40 00 80     eth9"


def address(tmp_path, *lines):
    table = tmp_path / "if_inet6"
    table.write_text("".join(line + "\n" for line in lines), encoding="ascii")
    return interface_ipv6("lo", if_inet6=str(table))


def test_a_configured_address_wins_over_slaac_whatever_the_order(tmp_path):
    assert address(tmp_path, PRIVACY, SLAAC, TENTATIVE_STATIC, STATIC) == "fd5e:213::1"
    assert address(tmp_path, STATIC, SLAAC) == "fd5e:213::1"


def test_slaac_address_when_nothing_is_configured(tmp_path):
    assert address(tmp_path, PRIVACY, LINK_LOCAL, OTHER_INTERFACE, SLAAC) == "fd5e:213::3c8e:5dff:fe1a:2b3c"


def test_no_stable_global_address_is_named(tmp_path):
    with pytest.raises(InterfaceError, match="lo has no global IPv6 address"):
        address(tmp_path, PRIVACY, TENTATIVE_STATIC, LINK_LOCAL, OTHER_INTERFACE)
