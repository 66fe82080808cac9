# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure builders for the per-MAC iPXE scripts and the URLs they contain."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract

# iPXE reads the script line by line and expands ${...} settings in every command: a control character
# in anything we paste into a line could end the command early or start a new one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _single_line(what, value):
    if _CONTROL.search(value):
        raise ValueError("%s must not contain control characters: %r" % (what, value))
    return value


# Seconds between attempts while the boot server cannot be reached (restarted, or the network dropped frames).
RETRY_SECONDS = 10


def _retrying(commands, what):
    """``commands`` (each ending the boot on success) run again every RETRY_SECONDS until one succeeds."""
    return ["%s || goto retry" % _single_line("iPXE command", command) for command in commands] + [
        ":retry",
        "echo Nixie: %s failed; asking the boot server again in %d s" % (what, RETRY_SECONDS),
        "sleep %d" % RETRY_SECONDS,
    ]


def _configure_network(url):
    """The iPXE command that configures the boot NIC afresh for reaching ``url`` (IPv4 DHCP, or IPv6)."""
    return "ifconf --configurator %s" % ("ipv6" if ":" in (urlsplit(url).hostname or "") else "dhcp")


def installer_script(script_url: str, kernel_url: str, initrd_url: str, cmdline: str, agent_api: str, token: str) -> str:
    """Return the script that boots the installer and tells its agent where and how to phone home.

    ``cmdline`` is the installer's own command line (``init=<toplevel>/init`` plus its kernel-params).
    ``initrd=initrd`` names the initrd loaded below: iPXE on UEFI needs it on the command line to hand
    the initrd to the kernel's EFI stub.

    A failed download must not leave the machine to its firmware: iPXE's ``exit`` falls through the
    boot order, and UEFI firmware stops at its boot menu once every entry failed, where only a power
    cycle helps. So the script waits and fetches ``script_url`` (itself) again, which brings fresh
    signed URLs and a fresh token from whichever boot server answers by then. It configures the NIC
    again first: a boot server started since has not heard this machine's DHCP exchange, and hands a
    token only to an address it heard there.
    """
    _single_line("cmdline", cmdline)
    params = [] if "initrd=initrd" in cmdline.split() else ["initrd=initrd"]
    params.extend(cmdline.split())
    params.append("%s=%s" % (contract.KERNEL_PARAM_API, agent_api))
    params.append("%s=%s" % (contract.KERNEL_PARAM_TOKEN, token))
    kernel_line = " ".join(["kernel", kernel_url] + params)
    lines = ["#!ipxe"] + _retrying([kernel_line, "initrd --name initrd %s" % initrd_url, "boot"], "loading the installer")
    # The script runs unregistered, so this frees only the half-loaded kernel and initrd.
    lines += ["imgfree", "%s || goto retry" % _configure_network(script_url),
              _single_line("script URL", "chain --replace %s || goto retry" % script_url)]
    return "\n".join(lines) + "\n"


def autoexec_script(base: str) -> str:
    """Return ``autoexec.ipxe``: configure the network, then chain the script of the NIC iPXE booted from.

    It is how iPXE finds Nixie on IPv6: with a site DHCPv6 server handing out addresses, iPXE takes only
    that server's answer and so never sees a proxy's boot file URL (unlike EDK2, which takes proxy offers).
    ``base``'s family picks the configurator; ``${netX}`` is the NIC iPXE configured last, the boot NIC.
    """
    configure = _configure_network(base)
    chain = "chain --replace %s%s" % (base, contract.boot_nic_script_path())
    lines = ["#!ipxe", ":attempt"] + _retrying([configure, chain], "fetching the boot script") + ["goto attempt"]
    return "\n".join(lines) + "\n"


def local_boot_script(host_name: str, failure_url: str) -> str:
    """Return the script for an installed host: leave the network boot for the disk, on BIOS and on UEFI.

    ``failure_url`` is where the script reports an iPXE that cannot boot the disk itself (``local_boot_failed_path``).
    """
    lines = [
        "#!ipxe",
        _single_line("comment", "# %s is installed: boot from local disk." % host_name),
        "# BIOS: `exit` hands control back to the firmware, which boots its next device, the disk.",
        "iseq ${platform} efi || exit",
        "# UEFI: `exit` returns success, which EDK2 takes for a finished boot: it opens its boot manager and waits",
        "# for a key. iPXE 2024-03 or later boots the first local disk holding \\EFI\\BOOT\\BOOTX64.EFI itself.",
        "sanboot --no-describe --drive 0 ||",
        "# An older iPXE cannot, and may hang on exit: the boot server stops answering this machine, and the",
        "# restart takes the firmware through its own boot order to the disk, every network entry failing on its own.",
        _single_line("failure URL", "imgfetch --name local-boot-failed %s ||" % failure_url),
        "reboot ||",
        "exit 1",
    ]
    return "\n".join(lines) + "\n"
