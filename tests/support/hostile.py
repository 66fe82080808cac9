# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A hostile machine on the boot network: paced floods of the boot server's ports, each run as its own process.

    python hostile.py dhcp|http|tftp CONFIG_JSON

Each flood prints ``ready`` once it has built what it sends, runs for ``seconds`` (or until SIGTERM), then prints
one JSON line: what it sent and what it got back. Rates are packets (or requests) per second and are kept to what
the flood is given, so that it loads the server and not the machine the test runs on. Start one in the attacker's
namespace (``LabClient.popen``) with ``flood_argv`` and read it with ``flood_summary``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import resource
import signal
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ETH_P_IP = 0x0800


def flood_argv(kind, config):
    """The argv that runs flood ``kind`` with ``config`` (a dict, JSON-encoded onto the command line)."""
    return [sys.executable, os.path.join(HERE, "hostile.py"), kind, json.dumps(config)]


def flood_summary(process, timeout):
    """Wait for a flood started with ``flood_argv`` (stdout piped, text) and return its summary."""
    out, dummy = process.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise AssertionError("flood exited with %s and no summary: %s" % (process.returncode, out[-2000:]))
    return json.loads(lines[-1])


def wait_ready(process):
    """Block until a flood says it is ready (its first line); raise if it died first."""
    line = process.stdout.readline()
    if line.strip() != "ready":
        raise AssertionError("flood did not start: %r %s" % (line, process.stdout.read()[-2000:]))


class _Pacer:
    """Sends ``rate`` per second of each kind, in ticks of 10 ms, so a flood is a steady load rather than bursts."""

    TICK = 0.01

    def __init__(self, rates):
        self.rates = rates
        self.owed = dict.fromkeys(rates, 0.0)

    def due(self):
        """{kind: how many to send this tick}."""
        counts = {}
        for kind, rate in self.rates.items():
            self.owed[kind] += rate * self.TICK
            counts[kind] = int(self.owed[kind])
            self.owed[kind] -= counts[kind]
        return counts


def _stop_on_sigterm():
    def stop(dummy_signum, dummy_frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, stop)


def _cpu_seconds():
    """What this flood cost the machine: its own CPU time, for the test's report of what the attacker took."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 2)


def _random_mac(rng):
    # Locally administered unicast, so no random MAC is ever one of the run's hosts by chance.
    return ":".join(["02"] + ["%02x" % rng.randrange(256) for dummy in range(5)])


# --- DHCP: ports 67 and 4011 -----------------------------------------------------------------------

def dhcp_flood(config):
    """PXE DISCOVERs from random MACs (broadcast to 67, and REQUESTs to the server's 4011), and DISCOVERs spoofing
    listed MACs without the broadcast flag from an unused ``ciaddr``, or as from a relay at an unused ``giaddr``.

    Sent as whole frames from a packet socket: the spoofed packets' IP source is the address they name (as the
    machine or relay that has it would send them), so that the attacker's own addresses are never heard in a
    listed MAC's DHCP exchange and its HTTP requests stay a stranger's.
    """
    # The import (scapy) takes a second or two: before "ready".
    sys.path.insert(0, HERE)
    from dhcp_packets import VENDOR_PXE_ROM, request_bytes  # pylint: disable=import-outside-toplevel
    from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.proxydhcp import ip_udp_packet  # pylint: disable=import-outside-toplevel

    rng = random.Random(config.get("seed", 67))
    own_mac = bytes.fromhex(config["own_mac"].replace(":", ""))
    server_mac = bytes.fromhex(config["server_mac"].replace(":", ""))
    unused = config["unused_addresses"]
    off_link = config["off_link_addresses"]

    def frame(destination_mac, source, destination, payload, source_port=68):
        return destination_mac + own_mac + struct.pack("!H", ETH_P_IP) + ip_udp_packet(source, source_port, destination, 67, payload)

    pool = collections.defaultdict(list)
    for index in range(config.get("pool", 1024)):
        xid = rng.getrandbits(32)
        broadcast = b"\xff" * 6
        pool["random_broadcast"].append(frame(broadcast, "0.0.0.0", "255.255.255.255",
                                              request_bytes(_random_mac(rng), options=VENDOR_PXE_ROM, xid=xid)))
        pool["random_pxe_port"].append(request_bytes(_random_mac(rng), options=VENDOR_PXE_ROM, xid=xid,
                                                     message_type="request" if index % 2 else "discover"))
        ciaddr = rng.choice(unused)
        mac = rng.choice(config["ciaddr_macs"])
        pool["ciaddr"].append(frame(broadcast, ciaddr, "255.255.255.255",
                                    request_bytes(mac, options=VENDOR_PXE_ROM, xid=xid, ciaddr=ciaddr)))
        giaddr = rng.choice(unused + off_link)
        mac = rng.choice(config["giaddr_macs"])
        pool["giaddr"].append(frame(server_mac, giaddr, config["server_ip"],
                                    request_bytes(mac, options=VENDOR_PXE_ROM, xid=xid, giaddr=giaddr), source_port=67))
    frames = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    frames.bind((config["interface"], 0))
    to_pxe_port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    to_pxe_port.bind((config["source_ip"], 0))
    pacer = _Pacer(config["rates"])
    sent = collections.Counter()
    errors = collections.Counter()
    print("ready", flush=True)
    started = time.monotonic()
    deadline = started + config["seconds"]
    tick = started
    try:
        while time.monotonic() < deadline:
            for kind, count in pacer.due().items():
                for dummy in range(count):
                    packet = pool[kind][sent[kind] % len(pool[kind])]
                    try:
                        if kind == "random_pxe_port":
                            to_pxe_port.sendto(packet, (config["server_ip"], 4011))
                        else:
                            frames.send(packet)
                        sent[kind] += 1
                    except OSError as err:
                        errors[err.__class__.__name__] += 1
            tick += _Pacer.TICK
            time.sleep(max(0.0, tick - time.monotonic()))
    finally:
        elapsed = time.monotonic() - started
        print(json.dumps({"sent": dict(sent), "errors": dict(errors), "seconds": elapsed, "rate": sum(sent.values()) / max(elapsed, 1e-9),
                          "cpu_seconds": _cpu_seconds()}), flush=True)


# --- TFTP: port 69 ---------------------------------------------------------------------------------

def tftp_flood(config):
    """Read requests from a fresh source port each, never acknowledged. Each port stays open (so the server's
    packets meet no ICMP port unreachable, which would end its transfer at once) for ``hold`` seconds."""
    request = struct.pack("!H", 1) + config["file"].encode() + b"\0octet\0"
    held = collections.deque()
    sent = answered = 0
    print("ready", flush=True)
    started = time.monotonic()
    deadline = started + config["seconds"]
    interval = 1.0 / config["rate"]
    next_send = started

    def count_and_close(sock):
        nonlocal answered
        try:
            sock.recv(65536)
            answered += 1
        except BlockingIOError:
            pass
        sock.close()

    try:
        while time.monotonic() < deadline:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind((config["source_ip"], 0))
            sock.sendto(request, (config["server_ip"], 69))
            sent += 1
            held.append((time.monotonic(), sock))
            while held and time.monotonic() - held[0][0] > config["hold"]:
                count_and_close(held.popleft()[1])
            next_send += interval
            time.sleep(max(0.0, next_send - time.monotonic()))
    finally:
        for dummy, sock in held:
            count_and_close(sock)
        elapsed = time.monotonic() - started
        print(json.dumps({"sent": sent, "answered": answered, "seconds": elapsed, "rate": sent / max(elapsed, 1e-9), "cpu_seconds": _cpu_seconds()}),
              flush=True)


# --- HTTP: port 8080 -------------------------------------------------------------------------------

class _HttpFlood:
    """Connections held open without a whole request (idle, or headers sent a line every few seconds), reopened as
    soon as the server closes them; and paced requests a stranger makes: random MACs' scripts, the listed MACs'
    scripts (a takeover's first step) and phone-homes with forged tokens."""

    def __init__(self, config):
        self.config = config
        self.deadline = time.monotonic() + config["seconds"]
        self.rng = random.Random(config.get("seed", 8080))
        self.statuses = collections.Counter()
        self.opened = 0
        self.refused_at_once = 0
        self.closed_by_server = 0
        # How long the server let a connection stay without a whole request; past its idle timeout is a failure.
        self.longest_held = 0.0
        self.held_now = 0
        self.most_held = 0

    async def hold(self, source, index):
        partial = index % 2 == 1
        while time.monotonic() < self.deadline:
            try:
                reader, writer = await asyncio.open_connection(self.config["server_ip"], self.config["port"], local_addr=(source, 0))
            except OSError:
                self.statuses["hold: connect failed"] += 1
                await asyncio.sleep(0.5)
                continue
            self.opened += 1
            opened = time.monotonic()
            established = False
            try:
                if partial:
                    writer.write(b"GET /boot/%s.ipxe HTTP/1.1\r\nHost: x\r\n" % self.rng.choice(self.config["listed"]).encode())
                while time.monotonic() < self.deadline:
                    try:
                        data = await asyncio.wait_for(reader.read(4096), 1.0)
                    except asyncio.TimeoutError:
                        if not established:
                            established = True
                            self.held_now += 1
                            self.most_held = max(self.most_held, self.held_now)
                        if partial and int(time.monotonic() - opened) % 3 == 0:
                            writer.write(b"X-Slow: %d\r\n" % self.rng.randrange(10 ** 6))
                        continue
                    if data:
                        self.statuses["hold: answered %s" % b"".join(data.split(b" ", 2)[1:2]).decode("ascii", "replace")] += 1
                    break
            except (ConnectionError, OSError):
                pass
            finally:
                lifetime = time.monotonic() - opened
                if established:
                    self.held_now -= 1
                if time.monotonic() < self.deadline:
                    if established:
                        self.closed_by_server += 1
                        self.longest_held = max(self.longest_held, lifetime)
                    else:
                        self.refused_at_once += 1
                writer.close()
            # A refused connection is tried again soon, as an attacker would, but not in a busy loop.
            await asyncio.sleep(0.2 if established else 1.0)

    async def request(self, source, kind):
        config = self.config
        headers, body = "", b""
        if kind == "random script":
            line = "GET /boot/%s.ipxe" % _random_mac(self.rng).replace(":", "-")
        elif kind == "listed script":
            line = "GET /boot/%s.ipxe" % self.rng.choice(config["listed"])
        else:
            # A forged token, reporting the attacker's own address or the real client's (which it is not).
            ip = source if kind == "phone-home, own ip" else config["victim_ip"]
            token = "".join(self.rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for dummy in range(43))
            body = json.dumps({"macs": [self.rng.choice(config["listed"]).replace("-", ":")], "ip": ip, "ssh_host_keys": [config["key"]],
                               "disks": [], "os_release": {"ID": "nixos", "VARIANT_ID": "installer"}}).encode()
            line = "POST /api/v1/phone-home"
            headers = "Authorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (token, len(body))
        wire = ("%s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n%s\r\n" % (line, config["server_ip"], config["port"], headers)).encode() + body
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(config["server_ip"], config["port"], local_addr=(source, 0)), 10)
            try:
                writer.write(wire)
                answer = await asyncio.wait_for(reader.read(), 10)
            finally:
                writer.close()
            status = answer.split(b" ", 2)[1].decode("ascii", "replace") if answer.startswith(b"HTTP/") else "no answer"
        except asyncio.TimeoutError:
            status = "timeout"
        except (ConnectionError, OSError) as err:
            status = err.__class__.__name__
        self.statuses["%s: %s" % (kind, status)] += 1

    async def requests(self, source):
        kinds = ("random script", "listed script", "phone-home, own ip", "phone-home, victim's ip")
        interval = 1.0 / self.config["rate_per_source"]
        next_at = time.monotonic() + self.rng.random() * interval
        pending = set()
        while time.monotonic() < self.deadline:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            if len(pending) >= self.config["in_flight_per_source"]:
                self.statuses["requests skipped, too many in flight"] += 1
                continue
            task = asyncio.ensure_future(self.request(source, self.rng.choice(kinds)))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=12)

    async def run(self):
        config = self.config
        tasks = [self.hold(source, index) for source in config["hold_sources"] for index in range(config["holds_per_source"])]
        tasks += [self.requests(source) for source in config["request_sources"]]
        print("ready", flush=True)
        await asyncio.gather(*tasks)

    def summary(self, elapsed):
        requests = sum(count for key, count in self.statuses.items() if not key.startswith(("hold", "requests skipped")))
        return {"statuses": dict(self.statuses), "opened": self.opened, "refused_at_once": self.refused_at_once,
                "closed_by_server": self.closed_by_server, "longest_held": self.longest_held, "most_held": self.most_held,
                "seconds": elapsed, "request_rate": requests / max(elapsed, 1e-9), "cpu_seconds": _cpu_seconds()}


def http_flood(config):
    flood = _HttpFlood(config)
    started = time.monotonic()
    try:
        asyncio.run(flood.run())
    finally:
        print(json.dumps(flood.summary(time.monotonic() - started)), flush=True)


FLOODS = {"dhcp": dhcp_flood, "http": http_flood, "tftp": tftp_flood}

if __name__ == "__main__":
    _stop_on_sigterm()
    FLOODS[sys.argv[1]](json.loads(sys.argv[2]))
