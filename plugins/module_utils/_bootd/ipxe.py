# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure builders for the per-MAC iPXE scripts and the URLs they contain."""

from __future__ import annotations

import ipaddress
import re

# iPXE reads the script line by line and expands ${...} settings in every command: a control character
# in anything we paste into a line could end the command early or start a new one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def url_host(address):
    """Return ``address`` as it goes between ``//`` and ``:port``: IPv6 literals in brackets (RFC 3986)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    return "[%s]" % parsed if parsed.version == 6 else str(parsed)


def base_url(address, port, scheme="http"):
    """Return ``http://<address>:<port>`` with IPv6 addresses bracketed."""
    return "%s://%s:%d" % (scheme, url_host(address), port)


def mac_path(mac):
    """Return the hyphenated MAC used in URLs (``${net0/mac:hexhyp}`` in iPXE)."""
    return mac.replace(":", "-")


def api_url(base):
    """Return the agent API root passed to the installer as ``nixie.api=``."""
    return "%s/api/v1" % base


def _single_line(what, value):
    if _CONTROL.search(value):
        raise ValueError("%s must not contain control characters: %r" % (what, value))
    return value


# Seconds between attempts while the boot server cannot be reached (restarted, or the network dropped frames).
RETRY_SECONDS = 10


def installer_script(script_url, kernel_url, initrd_url, cmdline, agent_api, token):
    """Return the script that boots the installer and tells its agent where and how to phone home.

    ``cmdline`` is the installer's own command line (``init=<toplevel>/init`` plus its kernel-params).
    ``initrd=initrd`` names the initrd loaded below: iPXE on UEFI needs it on the command line to hand
    the initrd to the kernel's EFI stub.

    A failed download must not leave the machine to its firmware: iPXE's ``exit`` falls through the
    boot order, and UEFI firmware stops at its boot menu once every entry failed, where only a power
    cycle helps. So the script waits and fetches ``script_url`` (itself) again, which brings fresh
    signed URLs and a fresh token from whichever boot server answers by then.
    """
    _single_line("cmdline", cmdline)
    params = [] if "initrd=initrd" in cmdline.split() else ["initrd=initrd"]
    params.extend(cmdline.split())
    params.append("nixie.api=%s" % agent_api)
    params.append("nixie.token=%s" % token)
    kernel_line = " ".join(["kernel", kernel_url] + params)
    lines = [
        "#!ipxe",
        _single_line("kernel line", kernel_line) + " || goto retry",
        _single_line("initrd line", "initrd --name initrd %s" % initrd_url) + " || goto retry",
        "boot || goto retry",
        ":retry",
        "echo Nixie: the installer did not load; asking the boot server again in %d s" % RETRY_SECONDS,
        "sleep %d" % RETRY_SECONDS,
        # The script runs unregistered, so this frees only the half-loaded kernel and initrd.
        "imgfree",
        _single_line("script URL", "chain --replace %s || goto retry" % script_url),
    ]
    return "\n".join(lines) + "\n"


def local_boot_script(host_name):
    """Return the script for an installed host: leave iPXE so the firmware boots the next device."""
    lines = [
        "#!ipxe",
        _single_line("comment", "# %s is installed: boot from local disk." % host_name),
        "# `exit` hands control back to the firmware, which tries its next boot entry (the disk).",
        "# Not `sanboot --no-describe --drive 0x80`: 0x80 is a BIOS INT 13h drive number that UEFI",
        "# firmware does not have, so it is not portable.",
        "exit",
    ]
    return "\n".join(lines) + "\n"
