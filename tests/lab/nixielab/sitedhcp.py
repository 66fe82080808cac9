"""The lab's site DHCP server: the ordinary DHCP server a real network already has.

It hands out addresses and nothing else (no boot file, no PXE options, no router), so everything a
lab machine learns about network booting must come from Nixie's ProxyDHCP. Like the dnsmasq in
many home routers, it does put its own address into the BOOTP next-server field (siaddr): a
ProxyDHCP client must not take that for a TFTP server. It runs dnsmasq (from `dnsmasq-base`,
which has no system service) in the lab namespace, bound to the bridge.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from pathlib import Path

from .processes import LabError, ProcessTracker, in_netns, text_so_far

LEASE_TIME = "1h"
# Router advertisements every 10 s with router lifetime 0: hosts configure addresses from the prefix
# (and iPXE stops waiting for IPv6 autoconfiguration) but nobody gets a default route out of the lab.
RA_INTERVAL = 10


class SiteDhcp:
    """dnsmasq as the site DHCP server on `interface` in namespace `netns`; files go to `run_dir`."""

    def __init__(self, netns: str, interface: str, run_dir: Path, tracker: ProcessTracker, *,
                 range4: tuple[str, str] | None, range6: tuple[str, str] | None, relayed: dict | None = None):
        """`relayed`: {"range4": (first, last), "netmask4", "router4"} of a subnet behind a DHCP relay, served through it."""
        if range4 is None and range6 is None:
            raise LabError("site DHCP needs an IPv4 or an IPv6 address range")
        self.netns = netns
        self.interface = interface
        self.range4 = range4
        self.range6 = range6
        self.relayed = relayed
        self.log_path = Path(run_dir) / "site-dhcp.log"
        self.lease_path = Path(run_dir) / "site-dhcp.leases"
        self.pid_path = Path(run_dir) / "site-dhcp.pid"
        self._tracker = tracker
        self._process: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        """dnsmasq's command line."""
        argv = [
            "dnsmasq",
            "--keep-in-foreground",          # the tracked PID stays dnsmasq's own
            "--conf-file=/dev/null",         # a dnsmasq.conf on the host must not add options here
            "--port=0", "--no-resolv", "--no-hosts",  # DHCP only, no DNS
            "--no-ping",                     # else dnsmasq pings every address for 3 s before offering it
            "--bind-interfaces", "--interface=%s" % self.interface,
            "--log-dhcp", "--log-facility=%s" % self.log_path,
            "--dhcp-leasefile=%s" % self.lease_path,
            "--pid-file=%s" % self.pid_path,
        ]
        if self.range4:
            # An empty router option sends none: the lab has no way out, and says so.
            argv += ["--dhcp-range=%s,%s,%s" % (*self.range4, LEASE_TIME), "--dhcp-option=option:router"]
        if self.relayed:
            # dnsmasq serves a relayed request from the range holding its giaddr, and cannot guess that subnet's mask.
            # Machines there need the router to reach the boot server's segment, as on any routed provisioning network.
            argv += ["--dhcp-range=set:relayed,%s,%s,%s,%s" % (*self.relayed["range4"], self.relayed["netmask4"], LEASE_TIME),
                     "--dhcp-option=tag:relayed,option:router,%s" % self.relayed["router4"]]
        if self.range6:
            # Stateful DHCPv6 (the RA's M flag) with SLAAC beside it (the A flag), as many IPv6 sites run: firmware
            # and iPXE lease an address, and the test installer, which has no DHCPv6 client, takes one from the RA.
            argv += ["--enable-ra", "--ra-param=%s,%d,0" % (self.interface, RA_INTERVAL),
                     "--dhcp-range=%s,%s,slaac,64,%s" % (*self.range6, LEASE_TIME)]
        return argv

    def start(self, timeout: float = 10.0) -> None:
        """Start dnsmasq and wait until it has bound its DHCP sockets."""
        for stale in (self.log_path, self.lease_path, self.pid_path):
            stale.unlink(missing_ok=True)
        self.lease_path.touch()
        self._process = self._tracker.spawn("site-dhcp", in_netns(self.netns, self.argv()),
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        # dnsmasq writes "DHCP, IP range ..." once its DHCP socket is bound.
        while "DHCP, " not in self._log_text():
            if self._process.poll() is not None:
                raise LabError("site DHCP (dnsmasq) exited with %s: %s" % (self._process.returncode, self._process.stderr.read().strip()))
            if time.monotonic() > deadline:
                raise LabError("site DHCP (dnsmasq) did not start within %.0f s; log: %s" % (timeout, self.log_path))
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop dnsmasq."""
        if self._process is not None:
            self._tracker.stop(self._process)
            self._process.stderr.close()
            self._process = None

    def leases(self) -> dict[str, ipaddress.IPv4Address]:
        """Current IPv4 leases, MAC address (lower case) to address."""
        leases = {}
        for fields in self._lease_lines():
            # IPv4 lines: expiry, MAC, address, hostname, client id
            if len(fields) >= 3 and ":" in fields[1] and "." in fields[2]:
                leases[fields[1].lower()] = ipaddress.IPv4Address(fields[2])
        return leases

    def wait_for_lease(self, mac: str, timeout: float) -> ipaddress.IPv4Address:
        """Wait until `mac` holds an IPv4 lease and return its address."""
        deadline = time.monotonic() + timeout
        while (address := self.leases().get(mac.lower())) is None:
            if time.monotonic() > deadline:
                raise LabError("no site DHCP lease for %s within %.0f s (leases: %s)" % (mac, timeout, self.leases()))
            time.sleep(0.2)
        return address

    def _lease_lines(self) -> list[list[str]]:
        return [line.split() for line in text_so_far(self.lease_path).splitlines()]

    def _log_text(self) -> str:
        return text_so_far(self.log_path)
