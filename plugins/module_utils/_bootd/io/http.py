# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot server's HTTP side: per-MAC iPXE scripts, kernel and initrd, iPXE binaries, the agent API.

Routes (``contract``: the agent, iPXE and ``_bootclient`` rely on them)::

    GET  /boot/<mac-with-hyphens>.ipxe     script for a host in the run; 404 for any other MAC
    GET  /files/<mac>/<signature>/kernel   installer kernel (sendfile, Content-Length, Range)
    GET  /files/<mac>/<signature>/initrd   installer initrd
    GET  /ipxe/<name>                      allow-listed iPXE binary, for UEFI HTTP boot
    GET  /ipxe/autoexec.ipxe               what that iPXE runs first: chain the script of its MAC
    POST /api/v1/phone-home                agent report; Bearer token; answers the deployer's key
  for a viewer (the controller secret's header, or the status page's cookie holding it or the status secret,
  ``runfiles.status_secret``):
    GET  /?secret=<secret>                 the status page: sets the cookie and sends the browser to /
    GET  /                                 the status page (HTML; a reload shows what the live updates show)
    GET  /api/v1/status-stream             the page's table at each change (server-sent events)
    GET  /api/v1/hosts/<mac>/install-log   the host's nixos-anywhere output
  controller only (the run's controller secret in the X-Nixie-Controller-Secret header):
    GET  /api/v1/state                     what the server serves (address, URL, interface, iPXE binaries)
    GET  /api/v1/events                    every host's entry of the host table
    GET  /api/v1/awaiting-phone-home       MACs holding a token no phone-home has claimed yet
    GET  /api/v1/hosts/<mac>               one host's entry; with ?wait=<s>&since=<ts of the last event
                                           seen> the answer waits (up to 30 s) until its next event
    POST /api/v1/hosts/<mac>/installed     {"installed": true|false}: boot its disk, or the installer
    POST /api/v1/hosts/<mac>/released      the controller is done with it
    POST /api/v1/hosts/<mac>/progress      {"step": "install", "phase": ...} or {"step": "power", "action": ...}

Kernel and initrd URLs are signed per host (HMAC of the MAC under a key made for this run), as
Pixiecore signs its URLs, rather than hidden behind one per-run secret path: a URL works only for a
MAC in the run and names that MAC, so kernel/initrd downloads show up in that host's progress, and
a URL seen on one host's console does not turn the server into a file server for the whole LAN
beyond the lifetime of the run. Every dynamic path segment is matched against a pattern or an
allow-list; nothing from a request is ever joined onto a file system path.

A script carries a fresh agent token only when the host table ties its requester to the MAC's DHCP
exchange; any other requester is refused (403, recorded with the reason), never served a script without
a token: such an installer would boot, fail to phone home and refuse SSH until a power cycle, where a
refused iPXE retries (autoexec.ipxe configures the network again first) or falls through to the next
boot entry, and the refusal shows in the host's progress.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import hashlib
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import threading
import time
import traceback
from typing import Any, Callable, Dict, Mapping, Optional, Sequence
from urllib.parse import urlsplit

try:
    from aiohttp import web
    from aiohttp.http_exceptions import HttpProcessingError
except ImportError:
    AIOHTTP_IMPORT_ERROR = traceback.format_exc()
else:
    AIOHTTP_IMPORT_ERROR = None

from ansible_collections.nixie.provision.plugins.module_utils._errors import require_library
from ansible_collections.nixie.provision.plugins.module_utils._mac import normalize_mac
from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import AUTOEXEC_NAME, SSH_KEY_TYPES, api_url, script_path
from ansible_collections.nixie.provision.plugins.module_utils._bootd.installers import Installer, installer_for
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.tcpinfo import bytes_acked, corked
from ansible_collections.nixie.provision.plugins.module_utils._bootd.page import clock, render_document, render_fleet
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.progress import FleetProgress, totals
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.ipxe import autoexec_script, installer_script, local_boot_script
from ansible_collections.nixie.provision.plugins.module_utils._ipxe_dir import find_ipxe_binaries
from ansible_collections.nixie.provision.plugins.module_utils._bootd.runfiles import status_secret
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.events import EventLog
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.limits import Budget, LogBudget
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostConflict, HostTable, NotItsMachine
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.tokens import TokenRefused
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

# A report is a few KB (keys, a dozen disks, os-release); anything near this is not our agent.
API_BODY_LIMIT = 256 * 1024
# What one machine on the boot network can hold. A connection without a whole request (idle, or headers sent a
# byte at a time) is closed after HTTP_IDLE_TIMEOUT, so is one idle between requests; a body must arrive within
# HTTP_BODY_TIMEOUT. iPXE and the agent open one connection at a time, and a controller a few.
HTTP_IDLE_TIMEOUT = 15.0
HTTP_BODY_TIMEOUT = 15.0
HTTP_CONNECTIONS_PER_CLIENT = 16
HTTP_CONNECTIONS = 384
# Requests per client address in HTTP_REQUEST_INTERVAL seconds, past which it gets 429. One boot makes a handful
# (script, kernel, initrd, phone-home, the agent's retries), so this is far past any machine's need, and at about a
# millisecond a request still keeps one address to a few percent of a core. The controller, known by its secret,
# has no limit.
HTTP_REQUESTS_PER_CLIENT = 600
HTTP_REQUEST_INTERVAL = 10.0
# Each connection may hold two files: its socket, and the kernel or initrd it sends.
HTTP_FILES = 2 * HTTP_CONNECTIONS
# Status streams open at once (a few browser tabs on the controller); each renders the table at each change, at most
# every STATUS_STREAM_INTERVAL seconds however many events a burst brings, once a second while a file is sent, and
# every STATUS_IDLE_REFRESH seconds without events (the time in each state goes on; a browser gone away is found).
STATUS_STREAMS = 4
STATUS_STREAM_INTERVAL = 0.5
STATUS_TRANSFER_TICK = 1.0
STATUS_IDLE_REFRESH = 5.0
# The key under which status streams wait for any host's next event.
_ANY_HOST = "*"
_LOG = logging.getLogger(__name__)

_HYPHEN_MAC = r"[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5}"
_SCRIPT_NAME = re.compile(r"^(%s)\.ipxe$" % _HYPHEN_MAC)
_FILE_MAC = re.compile(r"^%s$" % _HYPHEN_MAC)
_SIGNATURE = re.compile(r"^[0-9a-f]{32}$")
_BEARER = re.compile(r"^Bearer ([A-Za-z0-9_-]{16,256})$")
_DISK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# udev's /dev/disk/by-id and by-path names: no "/", and nothing a shell or a path would read specially.
_DISK_LINK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+@,=-]{0,254}$")
# Ethernet's 6 bytes, InfiniBand's 20, or anything between, as sysfs writes them.
_HARDWARE_ADDRESS = re.compile(r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){0,31}$")
_OS_RELEASE_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A suffix range of zero bytes asks for nothing: RFC 9110 14.1.1 makes it unsatisfiable (aiohttp sends the whole file).
_EMPTY_SUFFIX_RANGE = re.compile(r"^\s*bytes\s*=\s*-0+\s*$")


class ReportError(NixieError):
    """A phone-home body is not valid; the message starts with the offending field."""


def _text(field, value, limit, allow_empty=True):
    if not isinstance(value, str) or len(value) > limit or (not allow_empty and not value) or _CONTROL.search(value):
        raise ReportError("%s: must be a single-line string of at most %d characters" % (field, limit))
    return value


def _list(field, value, limit):
    if not isinstance(value, list) or len(value) > limit:
        raise ReportError("%s: must be a list of at most %d items" % (field, limit))
    return value


def _ssh_public_key(field, line):
    _text(field, line, 16384, allow_empty=False)
    parts = line.split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ReportError("%s: not an OpenSSH public key line ('<type> <base64> [comment]')" % field)
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ReportError("%s: the key is not valid base64" % field) from None
    # The key blob starts with its own type name; a mismatch means a mangled or spliced line.
    name_length = int.from_bytes(blob[:4], "big")
    if blob[4:4 + name_length] != parts[0].encode("ascii"):
        raise ReportError("%s: the key data does not match its type %s" % (field, parts[0]))
    return " ".join(parts)


def _disk(field, disk):
    if not isinstance(disk, dict):
        raise ReportError("%s: must be an object" % field)
    name = disk.get("name")
    if not isinstance(name, str) or not _DISK_NAME.match(name):
        raise ReportError("%s.name: must be a block device name such as sda or nvme0n1" % field)
    size = disk.get("size_bytes")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ReportError("%s.size_bytes: must be a non-negative integer" % field)
    flags = {}
    for flag in ("has_partitions", "has_filesystem"):
        if not isinstance(disk.get(flag), bool):
            raise ReportError("%s.%s: must be true or false" % (field, flag))
        flags[flag] = disk[flag]
    model = _text("%s.model" % field, disk.get("model", ""), 256)
    links = {}
    for links_field in ("by_id", "by_path"):
        # Optional: an agent of an earlier release reports none, and a disk layout naming a link then finds no disk.
        names = _list("%s.%s" % (field, links_field), disk.get(links_field, []), 64)
        for index, link in enumerate(names):
            if not isinstance(link, str) or not _DISK_LINK.match(link):
                raise ReportError("%s.%s[%d]: must be a /dev/disk/%s link name such as ata-QEMU_HARDDISK_QM00001"
                                  % (field, links_field, index, links_field.replace("_", "-")))
        links[links_field] = list(names)
    # An agent of an earlier release reports none of these: unknown, as for a disk that does not tell.
    identity = {key: _optional_text("%s.%s" % (field, key), disk.get(key), 256) for key in ("serial", "wwn")}
    rotational = _optional_bool("%s.rotational" % field, disk.get("rotational"))
    return dict(name=name, size_bytes=size, model=model.strip(), **flags, **links, **identity, rotational=rotational)


def _optional_text(field, value, limit):
    return None if value is None else _text(field, value, limit).strip() or None


def _optional_bool(field, value):
    if value is not None and not isinstance(value, bool):
        raise ReportError("%s: must be true, false or null" % field)
    return value


def _optional_count(field, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ReportError("%s: must be a non-negative integer or null" % field)
    return value


def _object(field, value, fields):
    if not isinstance(value, dict):
        raise ReportError("%s: must be an object with %s" % (field, ", ".join(fields)))
    return value


def _hardware(value):
    """The report's hardware, each value null where the machine's /sys and /proc did not tell; None from an older agent."""
    if value is None:
        return None
    _object("hardware", value, contract.HARDWARE_FIELDS)
    cpu = _object("hardware.cpu", value.get("cpu"), contract.CPU_FIELDS)
    dmi = _object("hardware.dmi", value.get("dmi"), contract.DMI_FIELDS)
    nics = []
    for index, nic in enumerate(_list("hardware.nics", value.get("nics"), 64)):
        field = "hardware.nics[%d]" % index
        _object(field, nic, contract.NIC_FIELDS)
        name = nic.get("name")
        if not isinstance(name, str) or not _DISK_NAME.match(name):
            raise ReportError("%s.name: must be a network interface name such as eth0" % field)
        mac = _optional_text("%s.mac" % field, nic.get("mac"), 64)
        if mac is not None and not _HARDWARE_ADDRESS.match(mac):
            raise ReportError("%s.mac: must be a hardware address such as 52:54:00:12:34:56" % field)
        nics.append({"name": name, "mac": mac and mac.lower(), "link": _optional_bool("%s.link" % field, nic.get("link")),
                     "speed_mbps": _optional_count("%s.speed_mbps" % field, nic.get("speed_mbps")),
                     "driver": _optional_text("%s.driver" % field, nic.get("driver"), 64)})
    return {
        "cpu": {"model": _optional_text("hardware.cpu.model", cpu.get("model"), 256),
                "cores": _optional_count("hardware.cpu.cores", cpu.get("cores")),
                "threads": _optional_count("hardware.cpu.threads", cpu.get("threads"))},
        "memory_bytes": _optional_count("hardware.memory_bytes", value.get("memory_bytes")),
        "dmi": {key: _optional_text("hardware.dmi.%s" % key, dmi.get(key), 256) for key in contract.DMI_FIELDS},
        "nics": nics,
    }


def parse_json(raw: bytes) -> Any:
    """A request body as JSON; ValueError when it is not, nesting too deep for the parser included (not a 500)."""
    try:
        # Replacement characters instead of a 400 for a disk model in some odd encoding: the agent
        # builds JSON in shell and would only send the same bytes again.
        return json.loads(raw.decode("utf-8", "replace"))
    except RecursionError:
        raise ValueError("nested too deep") from None


def parse_report(body: Any) -> Dict[str, Any]:
    """Validate a phone-home body and return the normalized report; raise ReportError naming the field."""
    if not isinstance(body, dict):
        raise ReportError("body: must be a JSON object")
    macs = []
    for index, value in enumerate(_list("macs", body.get("macs"), 64)):
        try:
            mac = normalize_mac(value)
        except ValueError:
            raise ReportError("macs[%d]: not a MAC address" % index) from None
        if mac not in macs:
            macs.append(mac)
    if not macs:
        raise ReportError("macs: must list at least one MAC address")
    try:
        ip = str(ipaddress.ip_address(_text("ip", body.get("ip"), 64)))
    except ValueError:
        raise ReportError("ip: not an IPv4 or IPv6 address") from None
    keys = [_ssh_public_key("ssh_host_keys[%d]" % i, line)
            for i, line in enumerate(_list("ssh_host_keys", body.get("ssh_host_keys"), 32))]
    disks = [_disk("disks[%d]" % i, disk) for i, disk in enumerate(_list("disks", body.get("disks"), 256))]
    os_release = body.get("os_release")
    if not isinstance(os_release, dict) or len(os_release) > 128:
        raise ReportError("os_release: must be an object of at most 128 entries")
    for key, value in os_release.items():
        if not _OS_RELEASE_KEY.match(key):
            raise ReportError("os_release: %r is not an os-release variable name" % key[:64])
        _text("os_release.%s" % key, value, 1024)
    return {"macs": macs, "ip": ip, "ssh_host_keys": keys, "disks": disks, "os_release": dict(os_release),
            "hardware": _hardware(body.get("hardware"))}


def parse_progress(body: Any) -> Dict[str, Any]:
    """Validate a controller's progress report (``HOST_PROGRESS_ROUTE``); return the step and its fields, or raise ReportError."""
    if not isinstance(body, dict):
        raise ReportError("body: must be a JSON object")
    step = body.get("step")
    if step not in contract.CONTROLLER_STEPS:
        raise ReportError("step: must be one of %s" % ", ".join(contract.CONTROLLER_STEPS))
    if step == contract.STEP_INSTALL:
        if body.get("phase") not in contract.INSTALL_PHASES:
            raise ReportError("phase: must be one of %s" % ", ".join(contract.INSTALL_PHASES))
        fields = {"phase": body["phase"]}
        if body.get("error") is not None:
            # A failure's message is several lines (the log's tail): kept whole, control characters but newlines refused.
            error = body["error"]
            if not isinstance(error, str) or len(error) > contract.INSTALL_ERROR_LIMIT or _CONTROL.search(error.replace("\n", " ")):
                raise ReportError("error: must be text of at most %d characters" % contract.INSTALL_ERROR_LIMIT)
            fields["error"] = error
        return dict(fields, step=step)
    if body.get("action") not in contract.POWER_ACTIONS:
        raise ReportError("action: must be one of %s" % ", ".join(contract.POWER_ACTIONS))
    return {"step": step, "action": body["action"],
            "power_state": _text("power_state", body.get("power_state") or "", 32) or None,
            "driver": _text("driver", body.get("driver") or "", 32) or None}


class BootState:
    """What the HTTP side serves: the run's ``table`` (a HostTable), the ``installer``, the iPXE binaries of ``ipxe_dir``.

    ``base_urls`` are the server's advertised roots (``http://10.0.0.2:8080``, ``http://[fd5e::1]:8080``):
    scripts point back at the one the client used. ``published`` is what the state route answers.
    ``controller_secret`` is what the controller's routes require (``contract.CONTROLLER_SECRET_HEADER``).
    It replaces a check of the source address, which any machine on the segment can spoof, and which would
    shut out a controller on another host.

    ``on_all_released`` is called once every host that was not installed at start has been released by the
    controller (it no longer needs the server): the transient server's end when no single task can stop it.
    """

    def __init__(self, *, table: HostTable, installer: Installer, ipxe_dir: str, authorized_key: str, events: EventLog,
                 base_urls: Sequence[str], controller_secret: str, published: Optional[Mapping[str, Any]] = None,
                 url_key: Optional[bytes] = None, on_all_released: Optional[Callable[[], None]] = None,
                 installers: Optional[Mapping[str, Installer]] = None) -> None:
        self.table = table
        self.on_all_released = on_all_released
        self.installer = installer
        # Every system's installer (``installer`` is the default one, for hosts that name no system).
        self.installers = {installer.system: installer, **(installers or {})}
        self.ipxe_binaries = find_ipxe_binaries(ipxe_dir)
        self.authorized_key = authorized_key
        self.events = events
        self.base_urls = list(base_urls)
        self.published = dict(published or {})
        self.controller_secret = controller_secret.encode("ascii")
        self.status_secret = status_secret(controller_secret).encode("ascii")
        self.url_key = url_key or secrets.token_bytes(32)
        # Set once the app runs: TFTP records events from its own thread, and their waiters live in the loop.
        self.loop = None
        self._waiters = {}
        # The status page's view, fed by every event from every thread; downloads in flight by MAC: (kind, socket, the
        # socket's byte count when the file's response began).
        self._progress_lock = threading.Lock()
        self.progress = FleetProgress((host.name, host.mac, host.installed) for host in map(table.get, table.macs()))
        self._sending: Dict[str, Any] = {}
        self.status_streams = 0
        events.subscribe(self._event_recorded)

    def _event_recorded(self, event):
        mac = event["mac"]
        with self._progress_lock:
            ours = self.progress.apply(event)
        # Only for a host someone waits on: a DHCP burst must not pay a loop wake-up per packet. A TFTP event that
        # lands between a waiter's read and its registration wakes nobody; the wait's timeout bounds that.
        if mac in self._waiters:
            self.loop.call_soon_threadsafe(self._wake, mac)
        if ours and _ANY_HOST in self._waiters:
            self.loop.call_soon_threadsafe(self._wake, _ANY_HOST)

    def _wake(self, mac):
        for waiter in self._waiters.pop(mac, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def next_change(self, timeout: float) -> None:
        """Return once any host of the run has another event, or after ``timeout`` seconds."""
        await self.next_event(_ANY_HOST, timeout)

    async def next_event(self, mac: str, timeout: float) -> None:
        """Return once ``mac`` has another event, or after ``timeout`` seconds."""
        waiter = self.loop.create_future()
        self._waiters.setdefault(mac, set()).add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            waiting = self._waiters.get(mac)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._waiters[mac]

    def start_sending(self, mac: str, kind: str, sock: Any) -> object:
        """Note that ``kind`` is being sent to ``mac`` on ``sock``; return the handle ``finish_sending`` takes."""
        handle = (kind, sock, bytes_acked(sock) or 0)
        self._sending[mac] = handle
        return handle

    def finish_sending(self, mac: str, handle: object) -> Optional[int]:
        """The bytes of the download of ``handle`` the peer acknowledged (None where unknown); it is no longer in flight."""
        if self._sending.get(mac) is handle:
            del self._sending[mac]
        kind, sock, baseline = handle
        acked = bytes_acked(sock)
        return None if acked is None else acked - baseline

    def status_rows(self, now: float) -> list:
        """Each host's row for the status page, an initrd in flight counted from its socket."""
        sent = {}
        for mac, (kind, sock, baseline) in list(self._sending.items()):
            acked = bytes_acked(sock)
            if kind == contract.STEP_INITRD and acked is not None:
                sent[mac] = acked - baseline
        with self._progress_lock:
            return self.progress.rows(now, sent)

    def sending(self) -> bool:
        """Whether a kernel or initrd is being sent."""
        return bool(self._sending)

    def file_signature(self, mac: str) -> str:
        return hmac.new(self.url_key, mac.encode("ascii"), hashlib.sha256).hexdigest()[:32]

    def installer_of(self, host: Any) -> Installer:
        """The installer ``host`` boots: its system's (validate_config made sure there is one)."""
        return installer_for(host, self.installers, self.installer.system)

    def file_url(self, base: str, mac: str, kind: str) -> str:
        return base + contract.file_path(mac, self.file_signature(mac), kind)


def _canonical_ip(address):
    parsed = ipaddress.ip_address(address)
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; compare them as the IPv4 they are.
    if parsed.version == 6 and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return str(parsed)


def _presents(presented: Optional[str], *secrets_accepted: bytes) -> bool:
    """Whether ``presented`` is one of ``secrets_accepted``, compared in constant time, each of them compared."""
    given = (presented or "").encode("utf-8", "surrogateescape")
    return bool(presented) and sum(hmac.compare_digest(given, secret) for secret in secrets_accepted) > 0


def _empty(status):
    return web.Response(status=status)


class _Handlers:
    def __init__(self, state: BootState) -> None:
        self.state = state

    def client(self, request: "web.Request") -> str:
        """The request's source address, in one spelling per address."""
        return _canonical_ip(request.remote)

    def refuse(self, request: "web.Request", status: int, reason: str, mac: Optional[str] = None, **fields: Any) -> "web.Response":
        self.state.events.record(mac, contract.STEP_REFUSED, ip=self.client(request), method=request.method,
                                 path=request.path[:256], status=status, reason=reason, **fields)
        return _empty(status)

    def _base_for(self, request):
        # Point the script's URLs at the address the client reached us on (it routes there), but only
        # if that is one we advertise: the Host header is the client's to choose.
        for base in self.state.base_urls:
            if urlsplit(base).netloc.lower() == request.host.lower():
                return base
        return self.state.base_urls[0]

    async def boot_script(self, request: "web.Request") -> "web.Response":
        match = _SCRIPT_NAME.match(request.match_info["name"])
        mac = normalize_mac(match.group(1)) if match else None
        host = self.state.table.get(mac)
        if host is None:
            return self.refuse(request, 404, "no host with this MAC in the run", requested=request.match_info["name"][:64])
        if host.installed:
            self.state.table.tokens.revoke(mac)
            self.state.events.record(mac, contract.STEP_BOOT_LOCAL, ip=self.client(request))
            script = local_boot_script(host.name, self._base_for(request) + contract.local_boot_failed_path(mac))
            return web.Response(text=script, content_type="text/plain")
        try:
            token = self.state.table.script_token(mac, self.client(request))
        except TokenRefused as refused:
            return self.refuse(request, 403, str(refused), mac)
        base = self._base_for(request)
        script = installer_script(base + script_path(mac),
                                  self.state.file_url(base, mac, contract.STEP_KERNEL), self.state.file_url(base, mac, contract.STEP_INITRD),
                                  self.state.installer_of(host).cmdline, api_url(base), token)
        self.state.events.record(mac, contract.STEP_SCRIPT, ip=self.client(request))
        return web.Response(text=script, content_type="text/plain")

    async def local_boot_failed(self, request: "web.Request") -> "web.Response":
        mac_text = request.match_info["mac"]
        mac = normalize_mac(mac_text) if _FILE_MAC.match(mac_text) else None
        if self.state.table.get(mac) is None:
            return self.refuse(request, 404, "no host with this MAC in the run", requested=mac_text[:64])
        try:
            self.state.table.note_local_boot_failed(mac, self.client(request))
        except NotItsMachine as refused:
            return self.refuse(request, 403, str(refused), mac)
        self.state.events.record(mac, contract.STEP_LOCAL_BOOT_FAILED, ip=self.client(request))
        # iPXE fetches this as an image; an empty script is one it can hold without harm.
        return web.Response(text="#!ipxe\n", content_type="text/plain")

    async def boot_file(self, request: "web.Request") -> "web.StreamResponse":
        kind = request.match_info["kind"]
        mac_text, signature = request.match_info["mac"], request.match_info["signature"]
        mac = normalize_mac(mac_text) if _FILE_MAC.match(mac_text) else None
        if kind not in (contract.STEP_KERNEL, contract.STEP_INITRD) or mac not in self.state.table \
                or not _SIGNATURE.match(signature) or not hmac.compare_digest(signature, self.state.file_signature(mac)):
            return self.refuse(request, 404, "unsigned or unknown file URL")
        installer = self.state.installer_of(self.state.table.get(mac))
        path = installer.kernel if kind == contract.STEP_KERNEL else installer.initrd
        try:
            size = os.path.getsize(path)
        except OSError:
            return self.refuse(request, 404, "the installer's %s is gone" % kind)
        self.state.events.record(mac, kind, ip=self.client(request), range=request.headers.get("Range"), size=size)
        return _MeteredFile(path, self.state, mac, kind)

    async def ipxe_binary(self, request: "web.Request") -> "web.StreamResponse":
        if request.match_info["name"] == AUTOEXEC_NAME:
            return self.autoexec(request)
        path = self.state.ipxe_binaries.get(request.match_info["name"])
        if path is None:
            return self.refuse(request, 404, "not an allow-listed iPXE binary")
        return web.FileResponse(path)

    def autoexec(self, request: "web.Request") -> "web.Response":
        # The client is an iPXE that UEFI HTTP boot loaded from /ipxe/: it knows no MAC-to-host mapping
        # yet, so the script names its MAC to us, and nothing host-specific is in this answer.
        base = self._base_for(request)
        self.state.events.record(None, contract.STEP_AUTOEXEC, ip=self.client(request))
        return web.Response(text=autoexec_script(base), content_type="text/plain")

    def _bearer(self, request):
        match = _BEARER.match(request.headers.get("Authorization", ""))
        return match.group(1) if match else None

    async def phone_home(self, request: "web.Request") -> "web.Response":
        client = self.client(request)
        token = self._bearer(request)
        try:
            if token is None:
                raise TokenRefused("no bearer token")
            self.state.table.tokens.check(token)
        except TokenRefused as refused:
            return self.refuse(request, 403, str(refused), refused.mac)
        if request.content_length is not None and request.content_length > API_BODY_LIMIT:
            return self.refuse(request, 413, "body larger than %d bytes" % API_BODY_LIMIT)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self.refuse(request, 413, "body larger than %d bytes" % API_BODY_LIMIT)
        try:
            report = parse_report(parse_json(raw))
        except ReportError as err:
            self.refuse(request, 400, str(err))
            return web.json_response({"error": str(err)}, status=400)
        except ValueError:
            self.refuse(request, 400, "body is not JSON")
            return web.json_response({"error": "body: not valid JSON"}, status=400)
        if _canonical_ip(report["ip"]) != client:
            # The controller connects to the reported address and pins the keys found there: an address
            # other than the one the report came from would point it at a machine that never proved anything.
            return self.refuse(request, 403, "reported ip %s is not the source address" % report["ip"])
        try:
            mac = self.state.table.claim(token, report["macs"], client)
        except TokenRefused as refused:
            return self.refuse(request, 403, str(refused), refused.mac)
        report["source_ip"] = client
        self.state.events.record(mac, contract.STEP_PHONE_HOME, ip=client, report=report)
        return self._key_answer()

    def _key_answer(self):
        # Raw UTF-8 rather than \u escapes: the agent unescapes JSON in awk and a key comment may be non-ASCII.
        body = json.dumps({contract.ANSWER_FIELD: self.state.authorized_key}, ensure_ascii=False)
        return web.Response(text=body, content_type="application/json")

    def from_controller(self, request: "web.Request") -> bool:
        """Whether ``request`` carries this run's controller secret in its header."""
        return _presents(request.headers.get(contract.CONTROLLER_SECRET_HEADER), self.state.controller_secret)

    def from_viewer(self, request: "web.Request") -> bool:
        """Whether ``request`` may see the status page: the controller, or a GET with the page's cookie.

        The cookie only reads: a page elsewhere cannot make the browser change anything (SameSite=Strict keeps it off
        other sites' requests anyway), and the status secret it may hold opens no controller route.
        """
        if self.from_controller(request):
            return True
        return request.method == "GET" and _presents(request.cookies.get(contract.STATUS_COOKIE),
                                                     self.state.controller_secret, self.state.status_secret)

    def _controller_only(self, request):
        """None for the controller's request, else the refusal to answer (a response, never falsy by accident)."""
        if self.from_controller(request):
            return None
        return self.refuse(request, 403, "%s is for the controller only: no or a wrong controller secret" % request.path[:64])

    def _viewers_only(self, request):
        """None for a request that may see the status page, else the refusal to answer."""
        if self.from_viewer(request):
            return None
        return self.refuse(request, 403, "%s is for the controller only: no or a wrong secret" % request.path[:64])

    async def _answer_controller(self, request, answer):
        refusal = self._controller_only(request)
        return refusal if refusal is not None else web.json_response(answer())

    async def published(self, request: "web.Request") -> "web.Response":
        return await self._answer_controller(request, lambda: self.state.published)

    async def events(self, request: "web.Request") -> "web.Response":
        return await self._answer_controller(request, lambda: {"hosts": self.state.table.snapshot()})

    async def awaiting_phone_home(self, request: "web.Request") -> "web.Response":
        return await self._answer_controller(request, lambda: {"awaiting_phone_home": self.state.table.awaiting_phone_home()})

    async def host(self, request: "web.Request") -> "web.Response":
        mac, refusal = self._controller_host(request)
        if refusal is not None:
            return refusal
        entry = self.state.table.entry(mac)
        try:
            wait = float(request.query.get("wait", 0))
            since = float(request.query["since"]) if "since" in request.query else None
        except ValueError:
            wait = since = math.nan
        if not (math.isfinite(wait) and wait >= 0 and (since is None or math.isfinite(since))):
            return web.json_response({"error": "wait: seconds, since: an event's ts; numbers expected"}, status=400)
        last = entry["last_event"]
        if wait and (last["ts"] if last else None) == since:
            await self.state.next_event(mac, min(wait, contract.HOST_WAIT_LIMIT))
            entry = self.state.table.entry(mac)
        return web.json_response(entry)

    def _controller_host(self, request, allowed=None):
        """``(mac, None)`` for a controller's request naming a host of the run, else ``(None, the answer to give)``.

        ``allowed`` is the check of who may ask (default: the controller alone).
        """
        refusal = (allowed or self._controller_only)(request)
        if refusal is not None:
            return None, refusal
        try:
            mac = normalize_mac(request.match_info["mac"])
        except ValueError:
            mac = None
        if mac not in self.state.table:
            return None, _empty(404)
        return mac, None

    async def mark_installed(self, request: "web.Request") -> "web.Response":
        """``POST {"installed": true|false}``: whether the host's script boots its disk or the installer."""
        mac, refusal = self._controller_host(request)
        if refusal is not None:
            return refusal
        try:
            installed = parse_json((await request.read()) or b"{}").get("installed", True)
        except (ValueError, AttributeError):
            installed = None
        if not isinstance(installed, bool):
            return web.json_response({"error": "body: expected {\"installed\": true or false}"}, status=400)
        # Marked before nixos-anywhere reboots the machine: one that keeps the network first in its boot order
        # must then boot its new disk, not the installer again. A failed install marks it back.
        try:
            host = self.state.table.set_installed(mac, installed)
        except HostConflict as conflict:
            return web.json_response({"error": str(conflict)}, status=409)
        self.state.events.record(mac, contract.STEP_MARKED_INSTALLED if installed else contract.STEP_MARKED_NOT_INSTALLED,
                                 ip=self.client(request))
        return web.json_response({"host": host.name, "mac": mac, "installed": installed})

    async def release(self, request: "web.Request") -> "web.Response":
        """``POST``: the controller is done with this host; the server ends when no host is left to serve."""
        mac, refusal = self._controller_host(request)
        if refusal is not None:
            return refusal
        self.state.events.record(mac, contract.STEP_RELEASED, ip=self.client(request))
        remaining = self.state.table.release(mac)
        if not remaining and self.state.on_all_released is not None:
            self.state.on_all_released()
        return web.json_response({"host": self.state.table.name(mac), "remaining": remaining})

    async def progress(self, request: "web.Request") -> "web.Response":
        """``POST {"step": "install" | "power", ...}``: what the controller is doing to the host, for its progress."""
        mac, refusal = self._controller_host(request)
        if refusal is not None:
            return refusal
        try:
            fields = parse_progress(parse_json((await request.read()) or b"{}"))
        except ReportError as err:
            return web.json_response({"error": str(err)}, status=400)
        except ValueError:
            return web.json_response({"error": "body: not valid JSON"}, status=400)
        step = fields.pop("step")
        self.state.events.record(mac, step, ip=self.client(request), **fields)
        return web.json_response({"host": self.state.table.name(mac), "step": step})

    async def install_log(self, request: "web.Request") -> "web.StreamResponse":
        mac, refusal = self._controller_host(request, self._viewers_only)
        if refusal is not None:
            return refusal
        path = contract.host_file(self.state.events.run_dir, self.state.table.name(mac), contract.HOST_INSTALL_LOG)
        if not os.path.isfile(path):
            return _empty(404)
        return web.FileResponse(path, headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"})

    def _fleet(self):
        rows = self.state.status_rows(time.time())

        def log_href(row):
            return contract.host_route(row["mac"], contract.HOST_INSTALL_LOG_ROUTE) if row["phase"] else None
        return rows, totals(rows), log_href

    async def status_page(self, request: "web.Request") -> "web.Response":
        """The status page; ``?secret=`` once, from the URL the playbook printed, becomes the page's cookie."""
        presented = request.query.get(contract.STATUS_SECRET_PARAM)
        if presented is not None:
            if not _presents(presented, self.state.controller_secret, self.state.status_secret):
                return self.refuse(request, 403, "a wrong secret for the status page")
            # Off the address bar and out of the history at once: the cookie holds it from now on.
            answer = web.Response(status=303, headers={"Location": contract.STATUS_ROUTE, "Cache-Control": "no-store"})
            answer.set_cookie(contract.STATUS_COOKIE, presented, httponly=True, samesite="Strict", path="/")
            return answer
        refusal = self._viewers_only(request)
        if refusal is not None:
            return refusal
        rows, summary, log_href = self._fleet()
        nonce = secrets.token_urlsafe(16)
        document = render_document(rows, summary, title="Nixie: %d hosts" % len(rows), generated=time.time(),
                                   stream_url=contract.STATUS_STREAM_ROUTE, script_nonce=nonce, log_href=log_href)
        return web.Response(text=document, content_type="text/html", headers={
            "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; connect-src 'self'; "
                                       "script-src 'nonce-%s'; frame-ancestors 'none'" % nonce})

    async def status_stream(self, request: "web.Request") -> "web.StreamResponse":
        """Server-sent events: the page's table now, then at each change."""
        refusal = self._viewers_only(request)
        if refusal is not None:
            return refusal
        if self.state.status_streams >= STATUS_STREAMS:
            return self.refuse(request, 503, "%d status streams open already" % STATUS_STREAMS)
        self.state.status_streams += 1
        try:
            stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
            await stream.prepare(request)
            while True:
                rows, summary, log_href = self._fleet()
                update = {"html": render_fleet(rows, summary, log_href), "updated": clock(time.time())}
                await stream.write(b"data: " + json.dumps(update).encode("utf-8") + b"\n\n")
                await self.state.next_change(STATUS_TRANSFER_TICK if self.state.sending() else STATUS_IDLE_REFRESH)
                await asyncio.sleep(STATUS_STREAM_INTERVAL)
        except (ConnectionError, RuntimeError):
            # The browser went away (aiohttp says so with ConnectionResetError, or RuntimeError once the transport is gone).
            return stream
        finally:
            self.state.status_streams -= 1


def make_app(state: BootState, requests: Optional[Budget] = None) -> "web.Application":
    """Return the aiohttp application serving ``state`` (a BootState).

    ``requests`` budgets each client address's requests (default HTTP_REQUESTS_PER_CLIENT in HTTP_REQUEST_INTERVAL).
    """
    require_library("aiohttp", AIOHTTP_IMPORT_ERROR)
    handlers = _Handlers(state)
    requests = requests or Budget(HTTP_REQUESTS_PER_CLIENT, HTTP_REQUEST_INTERVAL)

    @web.middleware
    async def record_unrouted(request, handler):
        if not handlers.from_viewer(request) and not requests.allow(handlers.client(request)):
            return handlers.refuse(request, 429, "more than %d requests in %.0f s" % (requests.burst, requests.interval))
        if _EMPTY_SUFFIX_RANGE.match(request.headers.get("Range", "")):
            return handlers.refuse(request, 416, "range of zero bytes")
        if request.body_exists and (request.content_length or 0) <= API_BODY_LIMIT:
            # Read here, under a deadline, so no handler waits on a body sent a byte at a time; the handlers'
            # own read() then answers from what was read. A larger body is the handler's to refuse unread.
            try:
                await asyncio.wait_for(request.read(), HTTP_BODY_TIMEOUT)
            except asyncio.TimeoutError:
                return handlers.refuse(request, 408, "body not sent within %.0f s" % HTTP_BODY_TIMEOUT)
            except web.HTTPRequestEntityTooLarge:
                return handlers.refuse(request, 413, "body larger than %d bytes" % API_BODY_LIMIT)
        try:
            return await handler(request)
        except web.HTTPException as err:
            if err.status < 400:
                raise
            # No route matched (traversal attempts, scanners) or a file vanished: note it, say nothing more.
            return handlers.refuse(request, err.status, err.reason)

    async def remember_loop(dummy_app):
        state.loop = asyncio.get_running_loop()

    app = web.Application(client_max_size=API_BODY_LIMIT, middlewares=[record_unrouted])
    app.on_startup.append(remember_loop)
    app.add_routes([
        web.get(contract.SCRIPT_ROUTE, handlers.boot_script),
        web.get(contract.LOCAL_BOOT_FAILED_ROUTE, handlers.local_boot_failed),
        web.get(contract.FILE_ROUTE, handlers.boot_file),
        web.get(contract.IPXE_ROUTE, handlers.ipxe_binary),
        web.post(contract.PHONE_HOME_ROUTE, handlers.phone_home),
        web.get(contract.STATE_ROUTE, handlers.published),
        web.get(contract.EVENTS_ROUTE, handlers.events),
        web.get(contract.AWAITING_PHONE_HOME_ROUTE, handlers.awaiting_phone_home),
        web.get(contract.HOST_ROUTE, handlers.host),
        web.post(contract.HOST_INSTALLED_ROUTE, handlers.mark_installed),
        web.post(contract.HOST_RELEASED_ROUTE, handlers.release),
        web.post(contract.HOST_PROGRESS_ROUTE, handlers.progress),
        web.get(contract.HOST_INSTALL_LOG_ROUTE, handlers.install_log),
        web.get(contract.STATUS_ROUTE, handlers.status_page),
        web.get(contract.STATUS_STREAM_ROUTE, handlers.status_stream),
    ])
    return app


class _MeteredFile(web.FileResponse if AIOHTTP_IMPORT_ERROR is None else object):
    """A kernel or initrd response whose bytes the status page counts while sendfile sends them; its end is an event."""

    def __init__(self, path: str, state: BootState, mac: str, kind: str) -> None:
        super().__init__(path)
        self._state = state
        self._mac = mac
        self._kind = kind

    async def prepare(self, request: "web.BaseRequest") -> Any:
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport else None
        handle = self._state.start_sending(self._mac, self._kind, sock)
        started = time.monotonic()
        complete = False
        try:
            with corked(sock):
                writer = await super().prepare(request)
            complete = True
            return writer
        finally:
            acked = self._state.finish_sending(self._mac, handle)
            # Whole, everything went to the kernel: the body's length (none for HEAD). Cut off, what the peer acknowledged
            # (headers included).
            sent = (0 if request.method == "HEAD" else self.content_length) if complete else acked
            self._state.events.record(self._mac, contract.STEP_FILE_SENT, kind=self._kind, bytes=sent or 0,
                                      seconds=round(time.monotonic() - started, 3), complete=complete)


class _RequestErrors(logging.Filter):
    """aiohttp's lines about requests it could not serve, through a LogBudget: a few per client and interval, then a count.

    A malformed request is the client's doing: its line says who sent it and why, without a traceback of our parser.
    """

    def __init__(self) -> None:
        super().__init__()
        self._budget = LogBudget(_LOG)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        # "Error handling request from %s": the client is the first argument.
        key = (record.msg.split(" from ")[0], record.args[0]) if isinstance(record.args, tuple) and record.args else record.msg
        if not self._budget.admit(key):
            return False
        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            record.msg = "%s: %s" % (record.msg, record.exc_info[1])
            record.exc_info = record.exc_text = None
        return True


class _ConnectionCaps:
    """Open HTTP connections, per client and in all: a new one is admitted only within both caps.

    ``refused`` counts those turned away (reset at once, so they hold no file descriptor).
    """

    def __init__(self, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self.refused = 0
        self._open: Dict[str, int] = {}
        self._count = 0
        self._log = LogBudget(_LOG)

    def admit(self, client: str) -> bool:
        held = self._open.get(client, 0)
        if held >= self.per_client or self._count >= self.total:
            self.refused += 1
            self._log.log(("HTTP connection refused", client), logging.WARNING, "HTTP: connection from %s refused: %s", client,
                          "%d open already" % held if held >= self.per_client else "%d connections open in all" % self._count)
            return False
        self._open[client] = held + 1
        self._count += 1
        return True

    def release(self, client: str) -> None:
        self._count -= 1
        held = self._open.pop(client) - 1
        if held:
            self._open[client] = held


class _Capped(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind ``_ConnectionCaps``: one over a cap is reset before aiohttp sees it."""

    def __init__(self, inner: asyncio.Protocol, caps: _ConnectionCaps) -> None:
        self._inner = inner
        self._caps = caps
        self._client = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = _canonical_ip(peer[0]) if peer else "?"
        if not self._caps.admit(client):
            transport.abort()
            return
        self._client = client
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self._client is not None:
            self._caps.release(self._client)
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._client is not None:
            self._inner.data_received(data)

    def eof_received(self) -> Optional[bool]:
        return self._inner.eof_received() if self._client is not None else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _CappedSite(web.BaseSite if AIOHTTP_IMPORT_ERROR is None else object):
    """aiohttp's TCPSite, with every connection behind the runner's ``_ConnectionCaps``."""

    def __init__(self, runner: "web.AppRunner", host: str, port: int, caps: _ConnectionCaps) -> None:
        super().__init__(runner, backlog=128)
        self._host = host
        self._port = port
        self._caps = caps

    @property
    def name(self) -> str:
        return contract.base_url(self._host, self._port)

    async def start(self) -> None:
        await super().start()
        protocol = self._runner.server
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Capped(protocol(), self._caps), self._host, self._port, backlog=self._backlog, reuse_address=True)


async def start_http(app: "web.Application", host: str, port: int, per_client: int = HTTP_CONNECTIONS_PER_CLIENT,
                     total: int = HTTP_CONNECTIONS, idle_timeout: float = HTTP_IDLE_TIMEOUT) -> "web.AppRunner":
    """Serve ``app`` on host:port (port 0 picks one); return the started AppRunner (``cleanup()`` stops it).

    ``runner.addresses`` gives the bound (host, port). At most ``per_client`` connections from one address and
    ``total`` in all are open at once; a connection without a whole request is closed after ``idle_timeout`` seconds.
    """
    logger = logging.getLogger(__name__ + ".requests")
    if not any(isinstance(existing, _RequestErrors) for existing in logger.filters):
        logger.addFilter(_RequestErrors())
    # aiohttp (3.10 and later) runs the keep-alive timer from the connection's start: it is also the header timeout.
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=idle_timeout, logger=logger)
    await runner.setup()
    try:
        await _CappedSite(runner, host, port, _ConnectionCaps(per_client, total)).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
