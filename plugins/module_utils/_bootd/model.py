# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small immutable values shared by the boot server's parts (ProxyDHCP, booter, HTTP, TFTP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._mac import unicast_mac

# Option 60 prefixes (PXE 2.1 and UEFI 2.5+ HTTP boot) and the exact value a reply must echo.
PXE_CLIENT = "PXEClient"
HTTP_CLIENT = "HTTPClient"

# Client system architecture (DHCP option 93, IANA "Processor Architecture Types"): those Nixie has an iPXE for.
ARCH_BIOS = 0
ARCH_UEFI_X64 = 7
ARCH_UEFI_X64_ALT = 9  # some x64 firmware reports 9 (EFI BC) instead of 7
ARCH_UEFI_ARM64 = 11
ARCH_UEFI_X64_HTTP = 16  # x64 UEFI *HTTP boot*, not arm64 (danderson/netboot #72, #142)
ARCH_UEFI_ARM64_HTTP = 19


@dataclass(frozen=True)
class Host:
    """A machine Nixie may boot; ``mac`` is normalised to lower-case colon form.

    ``local_boot_failed``: installed, and its iPXE said it cannot boot the disk, so only its firmware's own boot order can.
    ``system``: its flake configuration's ``nixpkgs.hostPlatform.system`` (x86_64-linux, aarch64-linux).
    """

    name: str
    mac: str
    installed: bool = False
    local_boot_failed: bool = False
    system: Optional[str] = None  # the Nix system whose installer it boots; None: the run's default installer

    def __post_init__(self):
        object.__setattr__(self, "mac", unicast_mac(self.mac))


@dataclass(frozen=True)
class Firmware:
    """What a DHCP client told about itself.

    ``arch`` is the option 93 code; ``vendor_class`` is PXE_CLIENT or HTTP_CLIENT; ``is_ipxe`` is true
    for iPXE, which must get its script rather than the iPXE binary again (the chainload loop).
    """

    arch: int
    vendor_class: str
    is_ipxe: bool


@dataclass(frozen=True)
class ServerAddress:
    """Where clients reach the boot server: its IPv4 address on the boot interface and its HTTP port."""

    ip: str
    http_port: int

    @property
    def http_base(self) -> str:
        return contract.base_url(self.ip, self.http_port)


@dataclass(frozen=True)
class BootSpec:
    """The answer for one client: a TFTP file name or an HTTP URL, and the option 60 to echo."""

    host: Host
    boot_file: str
    vendor_class: str = PXE_CLIENT


@dataclass(frozen=True)
class Reply:
    """A DHCP answer ready to send: ``destination`` is a socket address of the family it goes out on.

    ``send_again_after`` lists the seconds after the first send at which the same datagram goes out again.
    """

    payload: bytes
    destination: Tuple
    message_type: int
    send_again_after: Tuple[float, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What a DHCP ``handle`` made of one datagram: an event for ``mac`` and, maybe, a reply to send."""

    mac: str
    step: str
    reply: Optional[Reply]
    fields: Mapping[str, object]
