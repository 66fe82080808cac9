"""The power daemon: the lab's Wake-on-LAN receiver, standing in for the NICs of powered-off machines.

It runs inside the lab namespace (`python -m nixielab.powerd --config FILE`) and listens where a
sleeping NIC would notice a magic packet: UDP ports 9 and 7 over IPv4 (broadcasts included) and
IPv6 (multicast to ff02::1 included), and raw Ethernet frames of EtherType 0x0842 on the bridge.
A valid magic packet for a configured MAC powers that machine on (starts its QEMU) unless it
already runs. Every packet, valid or not, for a known MAC or not, is logged as one JSON line, so
tests can assert exactly what arrived; machines powering off are logged too.

`PowerDaemon` is the lab-side handle that starts the daemon and reads its log.
"""

from __future__ import annotations

import ipaddress
import json
import selectors
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from .machine import Machine
from .processes import LabError, ProcessTracker, daemon_config, in_netns, json_lines, python_environment, wait_for_entry
from .wol import ETHERTYPE_WOL, WOL_PORTS, format_mac, parse_magic_packet

# Not every constant is exported by Python's socket module (linux/in.h, linux/if_packet.h).
IP_PKTINFO = 8
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_TYPES = {0: "host", 1: "broadcast", 2: "multicast", 3: "otherhost"}
RECEIVE_SIZE = 2048
REAP_INTERVAL = 0.5


class WakeReceiver:
    """Receives magic packets on `interface` and powers on `machines` (the daemon's inside)."""

    def __init__(self, machines: list[Machine], interface: str, log_path: Path):
        self.machines = {machine.mac: machine for machine in machines}
        self.interface = interface
        self._log = open(log_path, "a", buffering=1, encoding="utf-8")  # pylint: disable=consider-using-with  # open for the daemon's life
        self._sockets: list[tuple[socket.socket, str]] = []

    def open_sockets(self) -> None:
        """Bind every listener; IPv6 is optional (an IPv4-only host may have it disabled), the others are not."""
        for port in WOL_PORTS:
            udp4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp4.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)  # to log whether it came as a broadcast
            udp4.bind(("0.0.0.0", port))
            self._sockets.append((udp4, "udp4"))
            try:
                udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                udp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                udp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                # Every interface is in the all-nodes group ff02::1, so the wildcard bind receives it.
                udp6.bind(("::", port))
            except OSError as error:
                self._write({"event": "no-ipv6", "port": port, "error": str(error)})
                udp6.close()
            else:
                self._sockets.append((udp6, "udp6"))
        ether = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETHERTYPE_WOL))
        ether.bind((self.interface, ETHERTYPE_WOL))
        # A NIC checks frames sent to its own MAC too; the bridge hands unicast frames for other MACs
        # to its own interface only in promiscuous mode.
        membership = struct.pack("iHH8s", socket.if_nametoindex(self.interface), PACKET_MR_PROMISC, 0, b"")
        ether.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, membership)
        self._sockets.append((ether, "ethernet"))
        self._write({"event": "listening", "interface": self.interface, "sockets": [entry[1] for entry in self._sockets],
                     "machines": sorted(self.machines)})

    def serve(self) -> None:
        """Receive until SIGTERM/SIGINT, then power off the machines this daemon started."""
        try:
            with selectors.DefaultSelector() as selector:
                for sock, via in self._sockets:
                    selector.register(sock, selectors.EVENT_READ, via)
                while True:
                    for key, _events in selector.select(REAP_INTERVAL):
                        self._receive(key.fileobj, key.data)
                    self._reap()
        finally:
            for machine in self.machines.values():
                machine.stop()
            for sock, _via in self._sockets:
                sock.close()
            self._write({"event": "stopped"})
            self._log.close()

    def _receive(self, sock: socket.socket, via: str) -> None:
        if via == "ethernet":
            # AF_PACKET address: interface, EtherType, packet type (host/broadcast/...), hardware type, source MAC
            payload, address = sock.recvfrom(RECEIVE_SIZE)
            packet_type, source_mac = address[2], address[4]
            source, destination = format_mac(source_mac), PACKET_TYPES.get(packet_type, str(packet_type))
            port = None
        else:
            payload, ancillary, _flags, address = sock.recvmsg(RECEIVE_SIZE, socket.CMSG_SPACE(20))
            source, port, destination = "%s:%d" % (_bracket(address[0]), address[1]), sock.getsockname()[1], _destination(ancillary)
        self.handle(payload, via=via, source=source, destination=destination, port=port)

    def handle(self, payload: bytes, **received) -> None:
        """Act on one received payload and log it (`received`: via, source, destination, port)."""
        entry = {"event": "packet", **received, "length": len(payload), "mac": None, "password": None}
        try:
            mac, password = parse_magic_packet(payload)
        except ValueError as error:
            entry.update(action="invalid", error=str(error))
            self._write(entry)
            return
        entry.update(mac=mac, password=password.hex() or None)
        machine = self.machines.get(mac)
        if machine is None:
            entry["action"] = "unknown-mac"
        elif machine.running:
            entry["action"] = "already-running"
        else:
            try:
                machine.start()
            except (LabError, OSError) as error:
                entry.update(action="start-failed", error=str(error))
            else:
                entry.update(action="started", machine=machine.name, pid=machine.pid)
        self._write(entry)

    def _reap(self) -> None:
        for machine in self.machines.values():
            status = machine.reap()
            if status is not None:
                self._write({"event": "power-off", "machine": machine.name, "mac": machine.mac, "status": status})

    def _write(self, entry: dict) -> None:
        self._log.write(json.dumps({"time": time.time(), **entry}) + "\n")


def _bracket(host: str) -> str:
    return "[%s]" % host if ":" in host else host


def _destination(ancillary: list) -> str | None:
    """The destination address from IP_PKTINFO / IPV6_PKTINFO: tells a broadcast from a unicast datagram."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            return str(ipaddress.IPv4Address(data[8:12]))  # struct in_pktinfo: ifindex, spec_dst, addr
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            return str(ipaddress.IPv6Address(data[:16]))  # struct in6_pktinfo: addr, ifindex
    return None


class PowerDaemon:
    """Lab-side handle: starts the daemon in namespace `netns` for `machines` and reads its log."""

    def __init__(self, netns: str, interface: str, run_dir: Path, tracker: ProcessTracker, machines: list[Machine]):
        self.netns = netns
        self.interface = interface
        self.machines = machines
        self.config_path = Path(run_dir) / "powerd.json"
        self.log_path = Path(run_dir) / "powerd.jsonl"
        self.stderr_path = Path(run_dir) / "powerd.stderr"
        self._tracker = tracker
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Start the daemon and wait until it listens."""
        for machine in self.machines:
            machine.prepare()  # disks exist before the first power-on, so tests can inspect them
        self.config_path.write_text(json.dumps({
            "interface": self.interface, "log": str(self.log_path),
            "machines": [machine.to_config() for machine in self.machines]}, indent=2), encoding="utf-8")
        self.log_path.unlink(missing_ok=True)
        with open(self.stderr_path, "wb") as stderr:
            self._process = self._tracker.spawn(
                "powerd", in_netns(self.netns, [sys.executable, "-m", "nixielab.powerd", "--config", str(self.config_path)]),
                env=python_environment(), stdin=subprocess.DEVNULL, stdout=stderr, stderr=subprocess.STDOUT)
        try:
            self.wait_for(lambda entry: entry["event"] == "listening", timeout)
        except LabError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the daemon; it powers off the machines it started."""
        if self._process is not None:
            self._tracker.stop(self._process, timeout=15.0)
            self._process = None

    def events(self) -> list[dict]:
        """Everything logged so far, oldest first."""
        return json_lines(self.log_path)

    def packets(self, mac: str | None = None) -> list[dict]:
        """Logged packets, those carrying `mac` only when given."""
        return [entry for entry in self.events() if entry["event"] == "packet" and (mac is None or entry["mac"] == mac.lower())]

    def wait_for(self, predicate, timeout: float) -> dict:
        """Wait for the first logged entry for which `predicate(entry)` is true."""
        return wait_for_entry(self.events, predicate, timeout, self._alive, "power daemon (log %s)" % self.log_path)

    def _alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise LabError("power daemon exited with %s: %s" % (self._process.returncode, self.stderr_path.read_text(errors="replace")))


def main(argv: list[str] | None = None) -> None:
    config = daemon_config(argv, "powerd", __doc__)
    receiver = WakeReceiver([Machine.from_config(machine) for machine in config["machines"]], config["interface"], Path(config["log"]))
    receiver.open_sockets()
    try:
        receiver.serve()
    except (KeyboardInterrupt, SystemExit):
        pass  # the way the lab stops the daemon; serve() has cleaned up


if __name__ == "__main__":
    main()
