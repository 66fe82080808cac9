"""A simulated machine: the network side of a netboot (no VM), as QEMU's firmware and iPXE do it.

PXE DISCOVER -> proxy offer (and, from dnsmasq, the PXE menu's request on port 4011) -> TFTP of the iPXE
binary (blksize 1468, tsize) -> DISCOVER as iPXE -> offer with the script URL -> HTTP script -> kernel ->
initrd -> the agent's phone-home POST. Each machine runs in a thread that has entered its own client
namespace, so every machine has its own address and MAC, as on a real segment.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import struct
import time
from urllib.parse import urlsplit

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract

from . import dhcp, netns

TFTP_BLKSIZE = 1468
_READ_CHUNK = 1 << 20


class BootFailed(RuntimeError):
    """A simulated machine did not get through its boot."""


def _dhcp(sock, client, ipxe, server_ip):
    xid = random.getrandbits(31)
    for attempt in range(4):  # firmware retransmits; so do we, after 1, 2, 4 s
        sock.sendto(dhcp.discover(xid, client.mac, ipxe=ipxe), ("255.255.255.255", dhcp.SERVER_PORT))
        deadline = time.monotonic() + 2 ** attempt
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                packet, source = sock.recvfrom(2048)
            except socket.timeout:
                break
            offer = dhcp.parse_offer(packet)
            if not offer or offer[0] != xid or source[0] != server_ip:
                continue
            if offer[1] or offer[3] is None:
                return offer[1]
            # A PXE menu instead of a file (dnsmasq's proxy mode): ask the boot server on port 4011.
            sock.sendto(dhcp.discover(xid, client.mac, ipxe=ipxe, boot_item=offer[3], ciaddr=client.address), (server_ip, 4011))
    raise BootFailed("%s: no ProxyDHCP answer (ipxe=%s)" % (client.mac, ipxe))


def tftp_get(server_ip, name, timeout=1.0, tries=6):
    """Fetch ``name`` as iPXE does (blksize 1468, tsize; the last packet sent again after ``timeout``); return the byte count.

    Retransmitting matters: a server at its transfer cap (Nixie: 64) drops further requests and counts on it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        last = struct.pack("!H", 1) + name.encode() + b"\0octet\0blksize\0%d\0tsize\0%d\0" % (TFTP_BLKSIZE, 0)
        peer = (server_ip, contract.TFTP_PORT)
        expected, received, silent = 1, 0, 0
        sock.sendto(last, peer)
        while True:
            try:
                packet, source = sock.recvfrom(65536)
            except socket.timeout:
                silent += 1
                if silent >= tries:
                    raise BootFailed("TFTP %s: no answer after %d tries" % (name, tries)) from None
                sock.sendto(last, peer)
                continue
            silent = 0
            opcode, block = struct.unpack_from("!HH", packet)
            peer = source
            if opcode == 6:  # OACK
                last = struct.pack("!HH", 4, 0)
            elif opcode != 3:
                raise BootFailed("TFTP %s: error %r" % (name, packet[:80]))
            else:
                if block == expected & 0xFFFF:
                    received += len(packet) - 4
                    expected += 1
                last = struct.pack("!HH", 4, block)
            sock.sendto(last, peer)
            if opcode == 3 and len(packet) - 4 < TFTP_BLKSIZE:
                return received


def _http(method, url, body=None, headers=None):
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        connection.request(method, parts.path, body=body, headers=headers or {})
        response = connection.getresponse()
        if response.status != 200:
            raise BootFailed("%s %s: HTTP %d" % (method, url, response.status))
        buffer = bytearray(_READ_CHUNK)
        size = 0
        chunks = []
        while True:
            count = response.readinto(buffer)
            if not count:
                break
            size += count
            if size <= 65536:  # scripts and answers are kept; kernel and initrd are only counted
                chunks.append(bytes(buffer[:count]))
        return b"".join(chunks) if size <= 65536 else size
    finally:
        connection.close()


def parse_script(script):
    """The kernel and initrd URLs and the agent's API root and token from an installer iPXE script."""
    kernel = re.search(r"^kernel (\S+)", script, re.M).group(1)
    initrd = re.search(r"^initrd (?:--name \S+ )?(\S+)", script, re.M).group(1)
    return kernel, initrd, re.search(r"nixie\.api=(\S+)", script).group(1), re.search(r"nixie\.token=(\S+)", script).group(1)


# A blank disk as the agent reports it (P6: the install module refuses to run without one).
BLANK_DISK = {"name": "vda", "size_bytes": 8 << 30, "model": "bench", "has_partitions": False, "has_filesystem": False}


def phone_home(api, token, mac, address, ssh_host_keys=(), disks=()):
    """The agent's report, with the fields Nixie validates; P5 sends no keys and no disks, P6 its SSH host key and a blank disk."""
    report = {"macs": [mac], "ip": address, "ssh_host_keys": list(ssh_host_keys), "disks": list(disks),
              "os_release": {"ID": "nixos", "VARIANT_ID": "installer"}}
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    return _http("POST", api + "/phone-home", json.dumps(report).encode(), headers)


def boot(client, server_ip, start_barrier=None, script_only=False):
    """Netboot ``client`` (a LabClient with ``address``); return the seconds each step took.

    With ``script_only``, stop after fetching the script and return it parsed instead (parse_script's tuple).
    """
    netns.enter(client.netns)
    steps = {}
    if start_barrier is not None:
        start_barrier.wait()
    mark = time.monotonic()

    def step(name):
        nonlocal mark
        now = time.monotonic()
        steps[name] = now - mark
        mark = now

    with dhcp.client_socket(client.iface) as sock:
        firmware_file = _dhcp(sock, client, False, server_ip)
        step("dhcp")
        tftp_get(server_ip, firmware_file)
        step("tftp")
        script_url = _dhcp(sock, client, True, server_ip)
    script = _http("GET", script_url).decode()
    step("script")
    parsed = parse_script(script)
    if script_only:
        return parsed
    kernel, initrd, api, token = parsed
    _http("GET", kernel)
    step("kernel")
    _http("GET", initrd)
    step("initrd")
    phone_home(api, token, client.mac, client.address)
    step("phone_home")
    return steps
