# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot policy: which file each DHCP client is told to boot.

The ProxyDHCP code asks ``Booter.decide`` and never decides itself, so the policy can be tested, and
replaced, without packets. The path of every machine is: firmware PXE -> iPXE binary (TFTP, or HTTP for
UEFI HTTP boot) -> iPXE asks again -> its per-MAC script over HTTP. The HTTP side writes the script; an
installed host's script tells iPXE to boot from disk, so installed hosts are still answered here, until
their iPXE reports that it cannot (``Host.local_boot_failed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import (
    ARCH_BIOS,
    ARCH_UEFI_ARM64,
    ARCH_UEFI_ARM64_HTTP,
    ARCH_UEFI_X64,
    ARCH_UEFI_X64_ALT,
    ARCH_UEFI_X64_HTTP,
    HTTP_CLIENT,
    PXE_CLIENT,
    BootSpec,
    Firmware,
    Host,
    ServerAddress,
)
from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import (
    IPXE_ARM64_EFI, IPXE_EFI, UNDIONLY_KPXE, ipxe_path, script_path,
)
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable

# Architecture code -> the iPXE build that runs there. The code names the CPU and firmware; whether the
# client fetches over TFTP or HTTP follows from its option 60 (HTTPClient can only do HTTP). IA32 (6),
# ARM32 (10) and x86 HTTP (15) are absent on purpose: Nixie ships no iPXE for them, and a wrong binary
# hangs the machine where no answer lets its firmware fall through to the next boot entry.
IPXE_BINARY_FOR_ARCH = {
    ARCH_BIOS: UNDIONLY_KPXE,
    ARCH_UEFI_X64: IPXE_EFI,
    ARCH_UEFI_X64_ALT: IPXE_EFI,
    ARCH_UEFI_X64_HTTP: IPXE_EFI,
    ARCH_UEFI_ARM64: IPXE_ARM64_EFI,
    ARCH_UEFI_ARM64_HTTP: IPXE_ARM64_EFI,
}


@dataclass(frozen=True)
class Decision:
    """``spec`` is the answer, or None for "stay silent"; ``reason`` says why in that case."""

    spec: Optional[BootSpec]
    reason: str = ""


class Booter:
    """Decides the boot file for the hosts of ``table`` (the run's HostTable).

    ``server``: the ServerAddress used in URLs; ``ipxe_binaries``: names of the iPXE binaries the server actually
    has (e.g. ``{"undionly.kpxe", "ipxe.efi"}``), so a client is never sent to a file that would 404.
    """

    def __init__(self, table: HostTable, server: ServerAddress, ipxe_binaries: Iterable[str]) -> None:
        self.server = server
        self._ipxe_binaries = frozenset(ipxe_binaries)
        self._table = table

    def host(self, mac: Optional[str]) -> Optional[Host]:
        """The Host with this normalised MAC, or None."""
        return self._table.get(mac)

    def host_count(self) -> int:
        """How many hosts the run lists."""
        return len(self._table.macs())

    def note_boot_address(self, mac: str, address: str) -> None:
        """The DHCP exchange of the boot client ``mac`` used ``address``: its script may be asked from there."""
        self._table.note_boot_address(mac, address)

    def decide(self, mac: Optional[str], firmware: Firmware) -> Decision:
        """Return the Decision for the client with normalised ``mac`` and classified ``firmware``."""
        host = self._table.get(mac)
        if host is None:
            # Other machines on the site network may PXE boot too; they belong to someone else.
            return Decision(None, "unknown MAC address")
        if host.local_boot_failed:
            # Its iPXE could not boot the disk and restarted the machine: every network entry the firmware
            # tries must now fail on its own, iPXE's included, so that the firmware reaches the disk's.
            return Decision(None, "installed, and its iPXE cannot boot its disk: left to the firmware's boot order")
        if firmware.is_ipxe:
            # Checked before the architecture: QEMU's BIOS ROM already is iPXE (option 77 "iPXE" with
            # arch 0), and answering it with undionly.kpxe again is an endless chainload loop.
            return Decision(BootSpec(host, self.server.http_base + script_path(mac), PXE_CLIENT))
        binary = IPXE_BINARY_FOR_ARCH.get(firmware.arch)
        if binary is None:
            return Decision(None, "no iPXE build for client architecture %d" % firmware.arch)
        if binary not in self._ipxe_binaries:
            return Decision(None, "client architecture %d needs %s, which the server does not have" % (firmware.arch, binary))
        if firmware.vendor_class == HTTP_CLIENT:
            # UEFI HTTP boot accepts only a URL, and only from an offer that echoes "HTTPClient".
            return Decision(BootSpec(host, self.server.http_base + ipxe_path(binary), HTTP_CLIENT))
        return Decision(BootSpec(host, binary, PXE_CLIENT))
