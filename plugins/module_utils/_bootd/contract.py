# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the boot server promises to everything that talks to it: each name, route, file, step and port once.

The server's parts (ProxyDHCP, TFTP, HTTP), the controller's client (``_bootclient``), the modules and the
installer's agent all take their names from here; nothing else spells them. Pure values and builders: no I/O.

The agent (``agent/nixie-agent``, in the installer) relies on this, and a test reads the script against it:

- the kernel command line carries ``nixie.api=<base>/api/v1`` and ``nixie.token=<token>`` (KERNEL_PARAM_*);
- it POSTs its report as JSON to ``<api>/phone-home`` (PHONE_HOME_ROUTE) with ``Authorization: Bearer <token>``;
  the report's fields are REPORT_FIELDS, each disk's DISK_FIELDS;
- a 200 answer is ``{"authorized_keys": "<the deployer's public key lines>"}`` (ANSWER_FIELD); any other status
  means "try again later" (the server may be restarting), 403 included.

The controller's routes (state, events, awaiting-phone-home, hosts, the status page) answer only requests that carry the run's
controller secret (CONTROLLER_SECRET_HEADER; the server writes it to CONTROLLER_SECRET_FILE at start);
``_bootclient`` is their one caller.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlencode

# Ports: ProxyDHCP beside the site's DHCP server, the PXE boot service, TFTP and the HTTP default.
DHCP_SERVER_PORT = 67
DHCP_CLIENT_PORT = 68
PXE_PORT = 4011
DHCP6_SERVER_PORT = 547
DHCP6_CLIENT_PORT = 546
TFTP_PORT = 69
DEFAULT_HTTP_PORT = 8080

# The iPXE builds the server hands out: BIOS PXE, UEFI x64 (full and SNP-only), UEFI arm64.
UNDIONLY_KPXE = "undionly.kpxe"
IPXE_EFI = "ipxe.efi"
SNPONLY_EFI = "snponly.efi"
IPXE_ARM64_EFI = "ipxe-arm64.efi"
IPXE_BINARIES = (UNDIONLY_KPXE, IPXE_EFI, SNPONLY_EFI, IPXE_ARM64_EFI)
# iPXE 2024-03 or later, started by UEFI HTTP boot, runs this script from beside its own URL.
AUTOEXEC_NAME = "autoexec.ipxe"

# The SSH host key types an agent may report, by their name in public key lines, each with ssh-keyscan's -t name.
SSH_KEY_TYPES = {
    "ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ecdsa-sha2-nistp256": "ecdsa", "ecdsa-sha2-nistp384": "ecdsa",
    "ecdsa-sha2-nistp521": "ecdsa", "sk-ssh-ed25519@openssh.com": "ed25519-sk", "sk-ecdsa-sha2-nistp256@openssh.com": "ecdsa-sk",
}

# Event steps, in the order a healthy network boot produces them, then the controller's and the refusals.
STEP_DHCP_OFFER = "dhcp_offer"
STEP_DHCP_ACK = "dhcp_ack"
STEP_DHCP_IGNORED = "dhcp_ignored"
STEP_TFTP_START = "tftp_start"
STEP_TFTP_DONE = "tftp_done"
STEP_AUTOEXEC = "autoexec"
STEP_SCRIPT = "script"
STEP_KERNEL = "kernel"
STEP_INITRD = "initrd"
STEP_PHONE_HOME = "phone_home"
STEP_MARKED_INSTALLED = "marked_installed"
STEP_MARKED_NOT_INSTALLED = "marked_not_installed"
STEP_RELEASED = "released"
STEP_REFUSED = "refused"
STEP_BOOT_LOCAL = "boot_local"
# An installed host's iPXE could not boot its disk (UEFI, iPXE before 2024-03): its firmware is left unanswered from then on.
STEP_LOCAL_BOOT_FAILED = "local_boot_failed"
# Past its budget a sender's events are counted: one such event per sender and interval says how many ("of", "count").
STEP_SUPPRESSED = "suppressed"
# The end of a kernel or initrd download: "kind", "bytes" the server sent, "seconds", "complete".
STEP_FILE_SENT = "file_sent"
# The controller's own reports (HOST_PROGRESS_ROUTE, CONTROLLER_STEPS): nixos-anywhere's phase ("phase", one of
# INSTALL_PHASES, and on failure "error")...
STEP_INSTALL = "install"
# ... and what the controller did to its power ("action", and "power_state" when a BMC said it); one of POWER_ON_ACTIONS
# means the host is on its way to the network boot.
STEP_POWER = "power"
POWER_ON_ACTIONS = ("on", "boot", "cycle")
POWER_ACTIONS = POWER_ON_ACTIONS + ("off", "status")
CONTROLLER_STEPS = (STEP_INSTALL, STEP_POWER)
STEPS = (
    STEP_DHCP_OFFER, STEP_DHCP_ACK, STEP_DHCP_IGNORED, STEP_TFTP_START, STEP_TFTP_DONE, STEP_AUTOEXEC, STEP_SCRIPT,
    STEP_KERNEL, STEP_INITRD, STEP_PHONE_HOME, STEP_MARKED_INSTALLED, STEP_MARKED_NOT_INSTALLED, STEP_RELEASED,
    STEP_REFUSED, STEP_BOOT_LOCAL, STEP_LOCAL_BOOT_FAILED, STEP_SUPPRESSED, STEP_FILE_SENT, STEP_INSTALL, STEP_POWER,
)
# nixos-anywhere's phases as the install module reports them: started, then the phase its output names, then the end.
INSTALL_STARTED = "started"
INSTALL_DONE = "done"
INSTALL_FAILED = "failed"
INSTALL_PHASES = (INSTALL_STARTED, "disko", "install", "reboot", INSTALL_DONE, INSTALL_FAILED)
# The longest failure message an install report may carry (the end of nixos-anywhere's output).
INSTALL_ERROR_LIMIT = 2000
# The installer's files, as served under FILE_ROUTE; a download is recorded as the step of its name.
FILE_KINDS = (STEP_KERNEL, STEP_INITRD)

# HTTP routes, in aiohttp's template syntax; the builders below fill them in.
SCRIPT_ROUTE = "/boot/{name}"
SCRIPT_SUFFIX = ".ipxe"
LOCAL_BOOT_FAILED_ROUTE = "/boot/{mac}/local-boot-failed"
FILE_ROUTE = "/files/{mac}/{signature}/{kind}"
IPXE_ROUTE = "/ipxe/{name}"
API_ROOT = "/api/v1"
PHONE_HOME_ROUTE = API_ROOT + "/phone-home"
STATE_ROUTE = API_ROOT + "/state"
EVENTS_ROUTE = API_ROOT + "/events"
AWAITING_PHONE_HOME_ROUTE = API_ROOT + "/awaiting-phone-home"
HOST_ROUTE = API_ROOT + "/hosts/{mac}"
HOST_INSTALLED_ROUTE = HOST_ROUTE + "/installed"
HOST_RELEASED_ROUTE = HOST_ROUTE + "/released"
HOST_PROGRESS_ROUTE = HOST_ROUTE + "/progress"
HOST_INSTALL_LOG_ROUTE = HOST_ROUTE + "/install-log"
# The status page, for a browser on the controller: the table at STATUS_ROUTE, live updates from STATUS_STREAM_ROUTE
# (server-sent events). A browser cannot send the secret header: it opens STATUS_ROUTE?STATUS_SECRET_PARAM=<secret> once
# and holds the secret in the STATUS_COOKIE cookie from then on, for the status routes only.
STATUS_ROUTE = "/"
STATUS_STREAM_ROUTE = API_ROOT + "/status-stream"
STATUS_SECRET_PARAM = "secret"
STATUS_COOKIE = "nixie_status"
# GET HOST_ROUTE?wait=<s>&since=<ts of the last event seen> is held until the host's next event, this long at most.
HOST_WAIT_LIMIT = 30.0
# The header in which the controller presents the run's secret to the routes above other than the agent's.
CONTROLLER_SECRET_HEADER = "X-Nixie-Controller-Secret"

# The installer's kernel command line: where its agent phones home, and with which token.
KERNEL_PARAM_API = "nixie.api"
KERNEL_PARAM_TOKEN = "nixie.token"
REPORT_FIELDS = ("macs", "ip", "ssh_host_keys", "disks", "os_release", "hardware")
DISK_FIELDS = ("name", "size_bytes", "model", "has_partitions", "has_filesystem", "by_id", "by_path", "serial", "wwn", "rotational")
# The report's "hardware": {"cpu": CPU_FIELDS, "memory_bytes", "dmi": DMI_FIELDS, "nics": [NIC_FIELDS]}; null where unknown.
HARDWARE_FIELDS = ("cpu", "memory_bytes", "dmi", "nics")
CPU_FIELDS = ("model", "cores", "threads")
DMI_FIELDS = ("vendor", "product", "serial")
NIC_FIELDS = ("name", "mac", "link", "speed_mbps", "driver")
ANSWER_FIELD = "authorized_keys"

# The run directory: the boot server's files, the installer build's, and one directory per host.
CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
PID_FILE = "server.pid"
LOG_FILE = "server.log"
EVENTS_FILE = "events.jsonl"
TOKENS_FILE = "agent-tokens.json"
CONTROLLER_SECRET_FILE = "controller-secret"
INSTALLER_STATE_FILE = "installer.json"
INSTALLER_LOG_FILE = "installer-build.log"
SYSTEMS_LOG_FILE = "systems-build.log"
HOST_INSTALL_LOG = "install.log"
HOST_EXTRA_FILES = "extra-files"
HOST_KNOWN_HOSTS = "known_hosts"
# The installer's host keys (its agent's report) under the host's name, and the ssh that nixos-anywhere runs with them.
HOST_INSTALLER_KNOWN_HOSTS = "installer_known_hosts"
HOST_INSTALLER_SSH = "installer-ssh"
# The machine's hardware as its agent reported it (the nixie_hardware facts).
HOST_HARDWARE = "hardware.json"
# nixos-facter's report, where nixos-anywhere writes it for a host with generate_hardware_config (unless told elsewhere).
HOST_FACTER = "facter.json"
# What the provision role leaves in the run directory at the end of a run: the status table frozen, per host timeline.
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"


def key_identity(line: str) -> tuple[str, str] | None:
    """``(type, base64)`` of an OpenSSH public key line, with or without leading host names or options; None if none."""
    fields = line.split()
    for index, field in enumerate(fields[:-1]):
        if field in SSH_KEY_TYPES:
            return field, fields[index + 1]
    return None


def run_file(run_dir: str, name: str) -> str:
    """The path of one of the run directory's own files (``CONFIG_FILE``, ``EVENTS_FILE``, ...)."""
    return os.path.join(run_dir, name)


def host_file(run_dir: str, host: str, name: str) -> str:
    """The path of a host's file in the run directory (``HOST_INSTALL_LOG``, ``HOST_EXTRA_FILES``, ...)."""
    return os.path.join(run_dir, host, name)


def url_host(address: str) -> str:
    """Return ``address`` as it goes between ``//`` and ``:port``: IPv6 literals in brackets (RFC 3986)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    return "[%s]" % parsed if parsed.version == 6 else str(parsed)


def base_url(address: str, port: int, scheme: str = "http") -> str:
    """Return ``http://<address>:<port>`` with IPv6 addresses bracketed."""
    return "%s://%s:%d" % (scheme, url_host(address), port)


def mac_path(mac: str) -> str:
    """Return the hyphenated MAC used in boot URLs (``${net0/mac:hexhyp}`` in iPXE)."""
    return mac.replace(":", "-")


def script_path(mac: str) -> str:
    """The path of the iPXE script of the host with normalised ``mac``: ``/boot/52-54-00-aa-00-01.ipxe``."""
    return SCRIPT_ROUTE.format(name=mac_path(mac) + SCRIPT_SUFFIX)


def local_boot_failed_path(mac: str) -> str:
    """Where the local-boot script of the host with normalised ``mac`` reports that its iPXE could not boot the disk."""
    return LOCAL_BOOT_FAILED_ROUTE.format(mac=mac_path(mac))


def boot_nic_script_path() -> str:
    """The script path as iPXE itself spells it for the NIC it configured last (``${netX}``, the boot NIC)."""
    return SCRIPT_ROUTE.format(name="${netX/mac:hexhyp}" + SCRIPT_SUFFIX)


def file_path(mac: str, signature: str, kind: str) -> str:
    """The signed path of the installer's ``kind`` (one of FILE_KINDS) for ``mac``."""
    return FILE_ROUTE.format(mac=mac_path(mac), signature=signature, kind=kind)


def ipxe_path(name: str) -> str:
    """The HTTP path under which UEFI HTTP-boot clients fetch an iPXE binary (or ``autoexec.ipxe``)."""
    return IPXE_ROUTE.format(name=name)


def api_url(base: str) -> str:
    """Return the agent API root passed to the installer as ``nixie.api=``."""
    return base + API_ROOT


def host_route(mac: str, route: str = HOST_ROUTE) -> str:
    """``HOST_ROUTE`` (or one of the routes under it) for the host with normalised ``mac``."""
    return route.format(mac=mac)


def status_url(base: str, secret: str) -> str:
    """The status page's address with ``secret``, as a browser opens it once: ``http://10.0.0.2:8080/?secret=...``."""
    return "%s%s?%s" % (base, STATUS_ROUTE, urlencode({STATUS_SECRET_PARAM: secret}))
