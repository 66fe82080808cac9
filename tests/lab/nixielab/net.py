"""The lab network: private network namespaces joined by one bridge, with nothing routed out.

    controller namespace (nxl-<tag>-ctl)       lab namespace (nxl-<tag>-lab)
    ansible-playbook, Nixie's boot server      site DHCP, power daemon, QEMU machines, tcpdump
    nixie0 10.213.0.1/24 ---- veth ---- ctl0 -- br0 10.213.0.2/24 -- tap0, tap1, ... (machines)
                                                 |
                                                 +-- c-<name> ---- veth ---- eth0 in nxl-<tag>-c-<name> (clients)

With `routed=True` the machines sit on a second segment behind a router namespace running a DHCP relay instead
(nixielab.routed). Only the namespaces the lab creates carry traffic: no default routes out, no forwarding but the
lab router's between its two subnets, no NAT, so nothing a test sends can leave them. Each lab has its own tag, so several labs can run side by side.
"""

from __future__ import annotations

import atexit
import dataclasses
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .bmcd import DRIVERS, BmcGlue
from .machine import Machine
from .powerd import PowerDaemon
from .routed import MACHINE_RANGE4, SEGMENT_CONTROLLER_IP4, RoutedSegment
from .processes import (NAMESPACE_PREFIX, STATE_ROOT, LabError, ProcessTracker, in_netns, nft_counted_packets, python_environment, raise_on_termination_signals,
                        run_checked, stop_namespace_processes)
from .sitedhcp import SiteDhcp

SUBNET4 = ipaddress.IPv4Network("10.213.0.0/24")
SUBNET6 = ipaddress.IPv6Network("fd5e:213::/64")
CTL_IP4, BRIDGE_IP4 = SUBNET4[1], SUBNET4[2]
CTL_IP6, BRIDGE_IP6 = SUBNET6[1], SUBNET6[2]
SITE_RANGE4 = (str(SUBNET4[100]), str(SUBNET4[199]))
SITE_RANGE6 = (str(SUBNET6[0x100]), str(SUBNET6[0x1ff]))
TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
UDHCPC_SCRIPT = Path(__file__).resolve().parent / "files" / "udhcpc-script"
IFNAMSIZ = 15  # longest interface name Linux accepts


def namespace_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _sysctl_no_dad(netns: str) -> None:
    # Duplicate address detection keeps fresh IPv6 addresses unusable for a second or more; the lab
    # assigns every address itself, so there is nothing to detect.
    run_checked(in_netns(netns, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]))


def _curl(run, argv, timeout: float, check: bool = False, output: str = "-") -> tuple[int, str]:
    """`(HTTP status, body)` of curl `argv` through `run` (a namespace's subprocess.run), the body written to `output` instead
    when that is a file; status 0 when curl got no answer (it then exits non-zero, which raises with `check`)."""
    done = run(["curl", "-sS", "-o", output, "-w", "\n%{http_code}", "--max-time", "%g" % timeout, *argv], capture_output=True, text=True,
               check=check)
    body, status = done.stdout.rsplit("\n", 1)
    return int(status), body


@dataclasses.dataclass
class LabClient:
    """A client namespace with one interface on the bridge, for protocol tests with real client tools."""

    name: str
    netns: str
    mac: str
    tracker: ProcessTracker
    iface: str = "eth0"

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run inside the client namespace."""
        return subprocess.run(in_netns(self.netns, argv), check=kwargs.pop("check", False), **kwargs)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """subprocess.Popen inside the client namespace, recorded so the lab stops it."""
        return self.tracker.spawn(Path(argv[0]).name, in_netns(self.netns, argv), **kwargs)

    def curl(self, *argv: str, timeout: float = 10, output: str = "-") -> tuple[int, str]:
        """`(HTTP status, body)` of curl `argv` run in the client namespace (the body written to file `output` instead, if
        given); status 0 when no answer came."""
        return _curl(self.run, argv, timeout, output=output)

    def dhcp4(self, timeout: int = 10) -> ipaddress.IPv4Address:
        """Get an IPv4 lease with busybox udhcpc, configure it on the interface and return the address."""
        udhcpc = ["udhcpc", "-i", self.iface, "-s", str(UDHCPC_SCRIPT), "-f", "-q", "-n", "-t", str(timeout), "-T", "1"]
        result = self.run(udhcpc, capture_output=True, text=True, timeout=timeout + 5)
        if result.returncode != 0:
            raise LabError("client %s: udhcpc got no lease: %s" % (self.name, (result.stderr + result.stdout).strip()))
        shown = run_checked(in_netns(self.netns, ["ip", "-4", "-o", "addr", "show", "dev", self.iface])).stdout.split()
        return ipaddress.IPv4Interface(shown[shown.index("inet") + 1]).ip


@dataclasses.dataclass
class SegmentController:
    """A second controller's namespace on the routed machines' segment, with an sshd for root (add_segment_controller)."""

    name: str
    netns: str
    ip4: ipaddress.IPv4Address
    iface: str = "eth0"


def netns_id(netns: str) -> str:
    """Named network namespace `netns` as /proc/<pid>/ns/net names the one a process runs in (net:[<inode>])."""
    return "net:[%d]" % os.stat("/run/netns/%s" % netns).st_ino


def _wait_listening(netns: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not run_checked(in_netns(netns, ["ss", "-Hltn", "sport = :%d" % port])).stdout.strip():
        if time.monotonic() > deadline:
            raise LabError("nothing listens on TCP port %d in %s after %g s" % (port, netns, timeout))
        time.sleep(0.2)


class LabNetwork:  # pylint: disable=too-many-instance-attributes  # the lab's addresses are its interface
    """The lab: namespaces, bridge, controller link, site DHCP, and what tests add (taps, clients, machines).

    Use as a context manager, or call start() and stop(); stop() also runs at interpreter exit and
    on SIGTERM/SIGHUP, so an interrupted test run leaves nothing behind.
    """

    bridge = "br0"
    ctl_if = "nixie0"
    subnet4 = SUBNET4
    subnet6 = SUBNET6

    def __init__(self, tag: str | None = None, *, ipv4: bool = True, ipv6: bool = False, site_dhcp: bool = True, routed: bool = False,
                 state_root: Path = STATE_ROOT):
        """`routed`: the machines sit behind the lab's router and DHCP relay (IPv4 only), which relays to the site
        DHCP server and to the controller's address, as a site admin would configure it for Nixie."""
        if not ipv4 and not ipv6:
            raise LabError("a lab needs IPv4, IPv6 or both")
        if routed and (ipv6 or not ipv4):
            raise LabError("the routed lab is IPv4 only: DHCPv6 relaying is not built")
        self.tag = tag or secrets.token_hex(3)
        if not TAG_PATTERN.match(self.tag):
            raise LabError("lab tag %r: use lower-case letters, digits and '-', at most 24 characters" % self.tag)
        self.ipv4, self.ipv6 = ipv4, ipv6
        self.lab_ns = "%s%s-lab" % (NAMESPACE_PREFIX, self.tag)
        self.ctl_ns = "%s%s-ctl" % (NAMESPACE_PREFIX, self.tag)
        self.ctl_ip4 = CTL_IP4 if ipv4 else None
        self.ctl_ip6 = CTL_IP6 if ipv6 else None
        self.bridge_ip4 = BRIDGE_IP4 if ipv4 else None
        self.bridge_ip6 = BRIDGE_IP6 if ipv6 else None
        self.run_dir = Path(state_root) / self.tag
        self.tracker = ProcessTracker(self.run_dir / "pids")
        self.routed = RoutedSegment(self.lab_ns, self.bridge, "%s%s-rtr" % (NAMESPACE_PREFIX, self.tag), "%s%s-seg" % (NAMESPACE_PREFIX, self.tag),
                                    self.run_dir, self.tracker) if routed else None
        relayed = {"range4": MACHINE_RANGE4, "netmask4": str(self.routed.subnet4.netmask), "router4": str(self.routed.gateway4)} if routed else None
        self.site_dhcp = SiteDhcp(self.lab_ns, self.bridge, self.run_dir, self.tracker, range4=SITE_RANGE4 if ipv4 else None,
                                  range6=SITE_RANGE6 if ipv6 else None, relayed=relayed) if site_dhcp else None
        self.machines: list[Machine] = []
        self.clients: list[LabClient] = []
        self.power_daemon: PowerDaemon | None = None
        self.bmc_drivers: dict[str, str] = {}
        self.bmcs: BmcGlue | None = None
        self._namespaces: list[str] = []

    @property
    def broadcast4(self) -> str:
        return str(self.subnet4.broadcast_address)

    @property
    def machine_ns(self) -> str:
        """The namespace whose bridge the machines' taps are on: the lab's own, or the routed machines' segment's."""
        return self.routed.segment_ns if self.routed else self.lab_ns

    @property
    def machine_bridge(self) -> str:
        return self.routed.bridge if self.routed else self.bridge

    # Lifecycle
    def __enter__(self) -> "LabNetwork":
        self.start()
        return self

    def __exit__(self, *_exc_info) -> None:
        self.stop()

    def start(self) -> "LabNetwork":
        """Create the namespaces and links, and start the site DHCP server."""
        for name in (self.lab_ns, self.ctl_ns, *((self.routed.router_ns, self.routed.segment_ns) if self.routed else ())):
            if namespace_exists(name):
                raise LabError("namespace %s exists already: another lab uses tag %r (or run `python -m nixielab teardown`)" % (name, self.tag))
        raise_on_termination_signals()
        atexit.register(self.stop)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.tracker.claim()
        try:
            self._build_network()
            if self.site_dhcp:
                self.site_dhcp.start()
            if self.routed:
                self.routed.start_relay([str(self.bridge_ip4), str(self.ctl_ip4)])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process the lab started (machines, daemons, captures) and delete its namespaces.

        The run directory stays, with its logs, for a look after a failure; `teardown` removes it.
        """
        atexit.unregister(self.stop)
        problems = []
        # The power daemon and the BMC glue first (they power off what they powered on), then machines a test started itself.
        for service in (self.power_daemon, self.bmcs, *self.machines, self.site_dhcp, self.routed):
            if service is not None:
                try:
                    service.stop()
                except (LabError, OSError, subprocess.SubprocessError) as error:
                    problems.append(str(error))
        try:
            self.tracker.stop_all()
        except (LabError, OSError) as error:
            problems.append(str(error))
        for name in reversed(self._namespaces):
            stop_namespace_processes(name)
            result = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True, check=False)
            if result.returncode != 0 and namespace_exists(name):
                problems.append("ip netns del %s: %s" % (name, result.stderr.strip()))
        self._namespaces.clear()
        if problems:
            raise LabError("lab %s did not stop cleanly: %s" % (self.tag, "; ".join(problems)))

    def _add_namespace(self, name: str) -> None:
        run_checked(["ip", "netns", "add", name])
        self._namespaces.append(name)
        run_checked(["ip", "-n", name, "link", "set", "lo", "up"])
        _sysctl_no_dad(name)

    def _build_network(self) -> None:
        self._add_namespace(self.lab_ns)
        self._add_namespace(self.ctl_ns)
        lab = ["ip", "-n", self.lab_ns]
        # No spanning tree and no forwarding delay: ports forward at once, as on an unmanaged switch.
        run_checked(lab + ["link", "add", self.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
        # Created inside the namespaces directly, so no name is ever taken in the host's namespace.
        run_checked(lab + ["link", "add", "ctl0", "type", "veth", "peer", "name", self.ctl_if, "netns", self.ctl_ns])
        run_checked(lab + ["link", "set", "ctl0", "master", self.bridge, "up"])
        for address, interface, netns in ((self.bridge_ip4, self.bridge, self.lab_ns), (self.bridge_ip6, self.bridge, self.lab_ns),
                                          (self.ctl_ip4, self.ctl_if, self.ctl_ns), (self.ctl_ip6, self.ctl_if, self.ctl_ns)):
            if address is not None:
                prefix = self.subnet4.prefixlen if address.version == 4 else self.subnet6.prefixlen
                run_checked(["ip", "-n", netns, "addr", "add", "%s/%d" % (address, prefix), "dev", interface])
        run_checked(lab + ["link", "set", self.bridge, "up"])
        run_checked(["ip", "-n", self.ctl_ns, "link", "set", self.ctl_if, "up"])
        if self.routed:
            self._add_namespace(self.routed.router_ns)
            self._add_namespace(self.routed.segment_ns)
            self.routed.build()
            self.routed.route_from(self.ctl_ns)

    def add_segment_controller(self, name: str, authorized_key: Path) -> "SegmentController":
        """A second controller on the routed machines' segment: namespace nxl-<tag>-<name> with `eth0` on the segment's
        bridge and a dropbear sshd that lets in root with `authorized_key` alone, as a rack's own controller would be."""
        if not self.routed:
            raise LabError("a segment controller needs the routed lab (routed=True)")
        controller = SegmentController(name=name, netns="%s%s-%s" % (NAMESPACE_PREFIX, self.tag, name), ip4=SEGMENT_CONTROLLER_IP4.ip)
        port = "k-%s" % name
        self._add_namespace(controller.netns)
        run_checked(["ip", "-n", self.machine_ns, "link", "add", port, "type", "veth", "peer", "name", controller.iface, "netns", controller.netns])
        run_checked(["ip", "-n", self.machine_ns, "link", "set", port, "master", self.machine_bridge, "up"])
        run_checked(["ip", "-n", controller.netns, "addr", "add", str(SEGMENT_CONTROLLER_IP4), "dev", controller.iface])
        run_checked(["ip", "-n", controller.netns, "link", "set", controller.iface, "up"])
        run_checked(["ip", "-n", controller.netns, "route", "add", "default", "via", str(self.routed.gateway4)])
        # root's home as dropbear's sessions see it: the lab's, with only the authorized key in it.
        home = self.run_dir / name / "home"
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(parents=True, mode=0o700)
        (ssh_dir / "authorized_keys").write_text(Path(authorized_key).read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        host_key = self.run_dir / name / "host_key"
        run_checked(["dropbearkey", "-t", "ed25519", "-f", str(host_key)])
        # root's own home stays untouched (it need not even have a ~/.ssh): in a mount namespace of its own, dropbear
        # reads a passwd that gives root the lab's home.
        passwd = self.run_dir / name / "passwd"
        passwd.write_text("".join(re.sub(r"^(root:(?:[^:]*:){4})[^:]*", lambda match: match.group(1) + str(home), line)
                                  for line in Path("/etc/passwd").read_text().splitlines(keepends=True)))
        self.tracker.spawn("dropbear", in_netns(controller.netns, [
            "unshare", "--mount", "sh", "-c", 'mount --bind "$1" /etc/passwd && exec dropbear -F -E -s -p "$2:22" -r "$3"',
            "sh", str(passwd), str(controller.ip4), str(host_key)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(controller.netns, 22, timeout=10)
        return controller

    # Running things
    def run_ctl(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run inside the controller namespace."""
        return subprocess.run(in_netns(self.ctl_ns, argv), check=kwargs.pop("check", False), **kwargs)

    def curl_ctl(self, *argv: str) -> tuple[int, str]:
        """`(HTTP status, body)` of curl `argv` run in the controller namespace."""
        return _curl(self.run_ctl, argv, 10, check=True)

    def popen_ctl(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """subprocess.Popen inside the controller namespace, recorded so stop() ends it."""
        return self.tracker.spawn(Path(argv[0]).name, in_netns(self.ctl_ns, argv), **kwargs)

    def run_lab(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """subprocess.run inside the lab namespace."""
        return subprocess.run(in_netns(self.lab_ns, argv), check=kwargs.pop("check", False), **kwargs)

    def popen_lab(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """subprocess.Popen inside the lab namespace, recorded so stop() ends it."""
        return self.tracker.spawn(Path(argv[0]).name, in_netns(self.lab_ns, argv), **kwargs)

    def drop_frames(self, table: str, match: list[str], priority: int = 0) -> None:
        """Drop and count the frames nftables' ``match`` selects, forwarded between the bridge's ports or delivered to it.

        The kernel here has no netem; nftables on the bridge drops frames between its ports just as well.
        """
        self.run_lab(["nft", "add", "table", "bridge", table], check=True)
        for hook in ("forward", "input"):
            self.run_lab(["nft", "add", "chain", "bridge", table, hook, "{ type filter hook %s priority %d; }" % (hook, priority)], check=True)
            self.run_lab(["nft", "add", "rule", "bridge", table, hook, *match, "counter", "drop"], check=True)

    def drop_one_frame_in(self, every: int, table: str = "lossy") -> None:
        """Drop a frame at random, one in ``every`` on average, whoever it is from or to (drop_frames)."""
        self.drop_frames(table, ["numgen", "random", "mod", str(every), "0"])

    def dropped_frames(self, table: str) -> int:
        """How many frames the rules of ``table`` (drop_frames) have dropped so far."""
        return nft_counted_packets(self.lab_ns, "bridge", table)

    # Things on the bridge
    def add_tap(self, name: str) -> str:
        """Create tap interface `name` on the machines' bridge (the lab's, or the routed segment's), for a QEMU NIC."""
        if len(name) > IFNAMSIZ:
            raise LabError("tap name %r is longer than %d characters" % (name, IFNAMSIZ))
        run_checked(["ip", "-n", self.machine_ns, "tuntap", "add", "dev", name, "mode", "tap"])
        run_checked(["ip", "-n", self.machine_ns, "link", "set", name, "master", self.machine_bridge, "up"])
        return name

    def add_client(self, name: str, mac: str) -> LabClient:
        """Create a client namespace whose `eth0` (with MAC `mac`) is plugged into the machines' bridge."""
        port = "c-%s" % name
        if len(port) > IFNAMSIZ:
            raise LabError("client name %r is too long: at most %d characters" % (name, IFNAMSIZ - 2))
        client = LabClient(name=name, netns="%s%s-c-%s" % (NAMESPACE_PREFIX, self.tag, name), mac=mac.lower(), tracker=self.tracker)
        self._add_namespace(client.netns)
        run_checked(["ip", "-n", self.machine_ns, "link", "add", port, "type", "veth",
                     "peer", "name", client.iface, "address", client.mac, "netns", client.netns])
        run_checked(["ip", "-n", self.machine_ns, "link", "set", port, "master", self.machine_bridge, "up"])
        run_checked(["ip", "-n", client.netns, "link", "set", client.iface, "up"])
        self.clients.append(client)
        return client

    def add_machine(self, name: str, mac: str, *, bmc: str | None = None, **options) -> Machine:
        """Define a QEMU machine on its own tap (options: Machine's firmware, nic, memory_mib, disk_size, prefill, ...).

        The machine stays off: power it on with Wake-on-LAN through the power daemon, or, with `bmc` ("redfish" or
        "ipmi"), through its BMC once start_bmcs() has started them.
        """
        if bmc not in (None, *DRIVERS):
            raise LabError("machine %s: bmc %r is not one of %s" % (name, bmc, ", ".join(DRIVERS)))
        machine = Machine(name=name, mac=mac, tap="tap%d" % len(self.machines), netns=self.machine_ns,
                          directory=self.run_dir / "machines" / name, tracker_dir=self.tracker.directory, **options)
        self.add_tap(machine.tap)
        self.machines.append(machine)
        if bmc is not None:
            self.bmc_drivers[name] = bmc
        return machine

    def start_power_daemon(self, machines: list[Machine] | None = None) -> PowerDaemon:
        """Start the power daemon for `machines` (default: every machine added so far without a BMC).

        It logs every magic packet, for the machines with a BMC too: they have no Wake-on-LAN here.
        """
        if self.power_daemon is not None:
            raise LabError("the power daemon runs already")
        self.power_daemon = PowerDaemon(self.machine_ns, self.machine_bridge, self.run_dir, self.tracker,
                                        [machine for machine in self.machines if machine.name not in self.bmc_drivers] if machines is None else machines)
        self.power_daemon.start()
        return self.power_daemon

    def start_bmcs(self) -> BmcGlue:
        """Start the BMCs of the machines added with one, on the controller namespace's loopback (so that only the
        controller reaches them), and the glue that powers each machine as its BMC says."""
        if self.bmcs is not None:
            raise LabError("the BMCs run already")
        self.bmcs = BmcGlue(self.ctl_ns, self.run_dir, self.tracker,
                            [(machine, self.bmc_drivers[machine.name]) for machine in self.machines if machine.name in self.bmc_drivers])
        self.bmcs.start()
        return self.bmcs

    def send_wol(self, payload: bytes, via: str = "udp4", *, destination: str | None = None, port: int = 9) -> None:
        """Send `payload` (see nixielab.wol.magic_packet) once from the controller's nixie0: as UDP (udp4, to the
        subnet broadcast unless `destination` is given; udp6, to ff02::1) or as an Ethernet frame (ethernet)."""
        if via == "udp4" and destination is None:
            destination = self.broadcast4
        argv = [sys.executable, "-m", "nixielab.wol", "--via", via, "--interface", self.ctl_if, "--port", str(port), "--payload", payload.hex()]
        run_checked(in_netns(self.ctl_ns, argv + (["--to", destination] if destination else [])), env=python_environment())
