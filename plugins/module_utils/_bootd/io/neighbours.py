# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kernel's IPv4 neighbour table (ARP cache) of the server's network namespace: which MAC an on-link address is at.

Every client that reaches the server on its own segment is in it: the kernel resolves the client's address before it
answers the client's first datagram or SYN. A client behind a relay shows there as its router's MAC.
"""

from __future__ import annotations

from typing import Optional

ARP_TABLE = "/proc/net/arp"
_INCOMPLETE = "00:00:00:00:00:00"


def parse_arp_table(text: str, address: str) -> Optional[str]:
    """The MAC that ``text`` (/proc/net/arp's) gives for IPv4 ``address``, lower case; None if it has none."""
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[0] == address and fields[3] != _INCOMPLETE:
            return fields[3].lower()
    return None


def neighbour_mac(address: str, arp_table: str = ARP_TABLE) -> Optional[str]:
    """The MAC the kernel's ARP cache gives for IPv4 ``address`` now; None for none, for IPv6, or if it cannot be read."""
    if ":" in address:
        return None
    try:
        with open(arp_table, encoding="ascii") as handle:
            return parse_arp_table(handle.read(), address)
    except (OSError, ValueError):
        return None
