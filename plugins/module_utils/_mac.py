# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""MAC address handling shared by the inventory, Wake-on-LAN and the boot server.

Private to the collection (leading underscore): no compatibility promise outside it.
"""

from __future__ import annotations

import re

# Accept what people paste from switches, BMCs and `ip link`: colons, hyphens, Cisco dots or bare hex.
_SEPARATED = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_CISCO = re.compile(r"^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$")
_BARE = re.compile(r"^[0-9a-f]{12}$")


def normalize_mac(value: object) -> str:
    """Return ``value`` as a lower-case, colon-separated MAC address; raise ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError("a MAC address must be a string, got %s" % type(value).__name__)
    candidate = value.strip().lower()
    if _SEPARATED.match(candidate) or _CISCO.match(candidate) or _BARE.match(candidate):
        digits = re.sub(r"[^0-9a-f]", "", candidate)
        return ":".join(digits[i:i + 2] for i in range(0, 12, 2))
    raise ValueError("%r is not a MAC address (expected six hex pairs such as bc:24:11:d0:28:34)" % value)


def mac_bytes(value: str) -> bytes:
    """Return the six bytes of a MAC address given in any form normalize_mac accepts."""
    return bytes.fromhex(normalize_mac(value).replace(":", ""))


def eui64_interface_id(value: str) -> bytes:
    """The 8-byte IPv6 interface identifier a host derives from its MAC by modified EUI-64 (RFC 4291, appendix A).

    The universal/local bit of the first octet is inverted and ff:fe goes between the two halves.
    """
    octets = bytearray(mac_bytes(value))
    octets[0] ^= 0x02
    return bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])


def unicast_mac(value: object) -> str:
    """Return ``value`` normalised as normalize_mac does, refusing what no NIC has as its own address.

    A broadcast or multicast MAC (group bit set: ff:ff:..., 01:00:5e:..., 33:33:...) or the all-zero one would make
    the boot server answer, or Wake-on-LAN wake, every machine or none instead of one.
    """
    mac = normalize_mac(value)
    if mac == "00:00:00:00:00:00":
        raise ValueError("%r is the all-zero MAC address, which no NIC has" % value)
    if int(mac[:2], 16) & 1:
        kind = "the broadcast" if mac == "ff:ff:ff:ff:ff:ff" else "a multicast"
        raise ValueError("%r is %s MAC address (first byte odd), not one NIC's" % (value, kind))
    return mac
