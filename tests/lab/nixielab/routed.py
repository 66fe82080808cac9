"""The lab's routed topology: a router namespace between the controller's segment and a machines' segment, running a
real DHCP relay (ISC dhcrelay), as a data centre's top-of-rack switch with `ip helper-address` does.

    controller's segment (br0 in nxl-<tag>-lab)          machines' segment (br1 in nxl-<tag>-seg)
    nixie0 10.213.0.1, site DHCP 10.213.0.2 -- up0 10.213.0.254 [nxl-<tag>-rtr] down0 10.213.1.1 -- tap0, tap1, ...
                                                  dhcrelay -a, ip_forward, bc_forwarding     power daemon 10.213.1.2

The router forwards between the two subnets only (neither has a default route, nor does the router), and directed
broadcasts to the machines' subnet (10.213.1.255) go out on its segment as Ethernet broadcasts, as Wake-on-LAN across
a router needs. The relay keeps option 82 (-a): it tags each request with the segment's circuit id, and strips it from
the servers' replies before passing them on.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from pathlib import Path

from .processes import LabError, ProcessTracker, in_netns, nft_counted_packets, run_checked, text_so_far

MACHINE_SUBNET4 = ipaddress.IPv4Network("10.213.1.0/24")
ROUTER_UP_IP4 = ipaddress.IPv4Interface("10.213.0.254/24")
ROUTER_DOWN_IP4 = ipaddress.IPv4Interface("%s/24" % MACHINE_SUBNET4[1])
SEGMENT_BRIDGE_IP4 = ipaddress.IPv4Interface("%s/24" % MACHINE_SUBNET4[2])
# A second controller on the machines' segment (LabNetwork.add_segment_controller).
SEGMENT_CONTROLLER_IP4 = ipaddress.IPv4Interface("%s/24" % MACHINE_SUBNET4[3])
MACHINE_RANGE4 = (str(MACHINE_SUBNET4[100]), str(MACHINE_SUBNET4[199]))
UP_IF, DOWN_IF = "up0", "down0"
REFUSE_TABLE = "nixielab_refuse"


class RoutedSegment:
    """The router namespace `router_ns` and the machines' segment `segment_ns` (bridge `bridge`), hung off the
    controller's segment's bridge `upstream_bridge` in namespace `upstream_ns`."""

    def __init__(self, upstream_ns: str, upstream_bridge: str, router_ns: str, segment_ns: str, run_dir: Path, tracker: ProcessTracker):
        self.upstream_ns, self.upstream_bridge = upstream_ns, upstream_bridge
        self.router_ns, self.segment_ns = router_ns, segment_ns
        self.bridge = "br1"
        self.subnet4 = MACHINE_SUBNET4
        self.gateway4 = ROUTER_DOWN_IP4.ip
        self.router_up4 = ROUTER_UP_IP4.ip
        self.relay_log_path = Path(run_dir) / "dhcrelay.log"
        self._run_dir = Path(run_dir)
        self._tracker = tracker
        self._relay: subprocess.Popen | None = None
        self.relay_servers: tuple[str, ...] = ()

    @property
    def broadcast4(self) -> str:
        """The machines' subnet's directed broadcast address."""
        return str(self.subnet4.broadcast_address)

    def build(self) -> None:
        """Link the router to both segments and turn on forwarding; the namespaces exist already."""
        seg, rtr = ["ip", "-n", self.segment_ns], ["ip", "-n", self.router_ns]
        run_checked(seg + ["link", "add", self.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
        run_checked(["ip", "-n", self.upstream_ns, "link", "add", "rtr-up", "type", "veth", "peer", "name", UP_IF, "netns", self.router_ns])
        run_checked(["ip", "-n", self.upstream_ns, "link", "set", "rtr-up", "master", self.upstream_bridge, "up"])
        run_checked(seg + ["link", "add", "rtr-down", "type", "veth", "peer", "name", DOWN_IF, "netns", self.router_ns])
        run_checked(seg + ["link", "set", "rtr-down", "master", self.bridge, "up"])
        run_checked(seg + ["addr", "add", str(SEGMENT_BRIDGE_IP4), "dev", self.bridge])
        run_checked(seg + ["link", "set", self.bridge, "up"])
        for interface, address in ((UP_IF, ROUTER_UP_IP4), (DOWN_IF, ROUTER_DOWN_IP4)):
            run_checked(rtr + ["addr", "add", str(address), "dev", interface])
            run_checked(rtr + ["link", "set", interface, "up"])
        # bc_forwarding on "all" and on the interface a directed broadcast comes in on (the kernel ANDs the two) is what
        # turns a routed 10.213.1.255 into a broadcast on the machines' link instead of a packet for the router itself.
        run_checked(in_netns(self.router_ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.bc_forwarding=1",
                                              "net.ipv4.conf.%s.bc_forwarding=1" % UP_IF]))
        # The site DHCP server answers relayed requests to the relay's giaddr, on the machines' side of the router.
        run_checked(["ip", "-n", self.upstream_ns, "route", "add", str(self.subnet4), "via", str(self.router_up4)])
        run_checked(seg + ["route", "add", "default", "via", str(self.gateway4)])

    def route_from(self, netns: str) -> None:
        """Route the machines' subnet from namespace `netns` (on the controller's segment) through the router."""
        run_checked(["ip", "-n", netns, "route", "add", str(self.subnet4), "via", str(self.router_up4)])

    def start_relay(self, servers: list[str], timeout: float = 10.0) -> None:
        """Run dhcrelay in the router, relaying the machines' segment's DHCP to `servers` (IPv4 addresses), with option 82.

        Restarting it with other servers is how a test changes what the site's router forwards.
        """
        self.stop_relay()
        self.relay_log_path.unlink(missing_ok=True)
        # -d: foreground, so the tracked PID stays dhcrelay's; -a: add option 82 (circuit id = the downstream interface);
        # -id/-iu: the machines' side and the servers' side.
        argv = ["dhcrelay", "-4", "-d", "-a", "-pf", str(self._run_dir / "dhcrelay.pid"), "-id", DOWN_IF, "-iu", UP_IF, *servers]
        log = open(self.relay_log_path, "w", encoding="utf-8")  # pylint: disable=consider-using-with  # handed to the process
        with log:
            self._relay = self._tracker.spawn("dhcrelay", in_netns(self.router_ns, argv), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        # dhcrelay prints "Sending on   Socket/fallback" once its sockets are open.
        while "Sending on   Socket/fallback" not in self.relay_log():
            if self._relay.poll() is not None:
                raise LabError("dhcrelay exited with %s: %s" % (self._relay.returncode, self.relay_log()))
            if time.monotonic() > deadline:
                raise LabError("dhcrelay did not start within %.0f s; log: %s" % (timeout, self.relay_log_path))
            time.sleep(0.05)
        self.relay_servers = tuple(servers)

    def stop_relay(self) -> None:
        """Stop dhcrelay, if it runs."""
        if self._relay is not None:
            self._tracker.stop(self._relay)
            self._relay = None
            self.relay_servers = ()

    def refuse_tcp_to(self, address: str, port: int) -> None:
        """The router refuses (and counts) TCP to `address`:`port` from the controller's segment, as a site's firewall
        keeps a rack's own boot server to its rack: only what runs on the rack reaches it (refused_tcp)."""
        for argv in (["add", "table", "inet", REFUSE_TABLE],
                     ["add", "chain", "inet", REFUSE_TABLE, "forward", "{ type filter hook forward priority 0; }"],
                     ["add", "rule", "inet", REFUSE_TABLE, "forward", "iifname", UP_IF, "ip", "daddr", address, "tcp", "dport", str(port),
                      "counter", "reject", "with", "tcp", "reset"]):
            run_checked(in_netns(self.router_ns, ["nft", *argv]))

    def refused_tcp(self) -> int:
        """How many TCP packets refuse_tcp_to has refused so far."""
        return nft_counted_packets(self.router_ns, "inet", REFUSE_TABLE)

    def stop(self) -> None:
        self.stop_relay()

    def relay_log(self) -> str:
        return text_so_far(self.relay_log_path)
