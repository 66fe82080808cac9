# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot server process: ProxyDHCP, TFTP and HTTP over one event log, started and stopped together.

One asyncio loop runs ProxyDHCP and HTTP; TFTP runs in its own thread (see tftp.py). Start-up binds every
socket before it reports ready, so a port that is taken fails the start instead of a boot later; the first
part to fail stops the others. SIGTERM and SIGINT stop everything and release every port.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import ipaddress
import json
import logging
import os
import re
import resource
import signal
from typing import Any, Callable, Dict, List, Mapping, Tuple

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract, daemon, preflight
from ansible_collections.nixie.provision.plugins.module_utils._bootd.runfiles import create_controller_secret
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.proxy import ClientMemo
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.events import EventLog
from ansible_collections.nixie.provision.plugins.module_utils._bootd.installers import Installer, check_host_systems, installers_from_config, own_system
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.http import HTTP_FILES, BootState, make_app, start_http
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.neighbours import neighbour_mac
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host, ServerAddress
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.proxydhcp import start_proxydhcp
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.proxydhcp6 import start_proxydhcp6
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.tftp import TFTP_TRANSFERS, TftpServer
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.udp import PortBindError
from ansible_collections.nixie.provision.plugins.module_utils._hosts import host_name
from ansible_collections.nixie.provision.plugins.module_utils._ipxe_dir import find_ipxe_binaries
from ansible_collections.nixie.provision.plugins.module_utils._rundir import make_run_dir
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.limits import LogBudget
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.tokens import TokenStore, read_outstanding, write_outstanding

# The files the server may hold at once: HTTP's connections and what they send, TFTP's transfers (a socket each, and
# the binary's file while a request reads it), and the rest (listening sockets, logs, the event loop, Python's own).
OTHER_FILES = 64
_LOG = logging.getLogger(__name__)


def tftp_transfers(host_count: int) -> int:
    """TFTP transfers at once for a run of ``host_count`` hosts: one each, so a fleet booting together never waits for
    a slot, and TFTP_TRANSFERS more."""
    return host_count + TFTP_TRANSFERS


def files_needed(host_count: int) -> int:
    """Open files the server may need at once for a run of ``host_count`` hosts."""
    return HTTP_FILES + 2 * tftp_transfers(host_count) + OTHER_FILES


class ServerError(NixieError):
    """The boot server cannot start with this configuration."""


def config_digest(config: Dict[str, Any]) -> str:
    """A stable digest of a configuration, to tell whether a running server serves the same one."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


# Control characters would end the line they are written into: an iPXE script's kernel line, a URL, a log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_authorized_key(text):
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ServerError("authorized_key: no SSH public key given")
    for line in lines:
        if contract.key_identity(line) is None:
            raise ServerError("authorized_key: %r is not an OpenSSH public key line (such as 'ssh-ed25519 AAAA... me@host'); "
                              "give one key per line as a string" % line[:60])


def validate_config(config: Mapping[str, Any]) -> Tuple[List[Host], Dict[str, str], Dict[str, Installer]]:
    """Check what can be checked before forking; raise ServerError naming the problem. Return the hosts, the iPXE
    binaries and the installers by system."""
    port = config["http_port"]
    if not 0 < port < 65536:
        raise ServerError("http_port: must be a TCP port from 1 to 65535, got %d" % port)
    installers = installers_from_config(config)
    for installer in installers.values():
        # The run's own installer's fields are top-level options; the others are entries of `installers`.
        prefix = "" if installer.system == own_system(config) else "installers[%s]." % installer.system
        if _CONTROL.search(installer.cmdline):
            raise ServerError("%scmdline: must be one line without control characters, got %r" % (prefix, installer.cmdline))
        for key in ("kernel", "initrd"):
            if not os.path.isfile(getattr(installer, key)):
                raise ServerError("%s%s: no such file: %s" % (prefix, key, getattr(installer, key)))
    _check_authorized_key(config["authorized_key"])
    for host in config["hosts"]:
        try:
            host_name(host["name"])
        except ValueError as exc:
            raise ServerError("hosts: %s" % exc) from None
    binaries = find_ipxe_binaries(config["ipxe_dir"])
    if not binaries:
        raise ServerError("ipxe_dir: %s holds none of %s (on Debian: apt install ipxe)"
                          % (config["ipxe_dir"], ", ".join(contract.IPXE_BINARIES)))
    hosts = [Host(**host) for host in config["hosts"]]
    check_host_systems(hosts, installers)
    if not hosts:
        raise ServerError("hosts: the boot server needs at least one host to answer")
    HostTable(hosts)  # refuses two hosts with one MAC before the daemon forks
    return hosts, binaries, installers


def is_ipv6(address: str) -> bool:
    """Whether the server address is IPv6: then it serves proxy DHCPv6 instead of ProxyDHCP (one family per server)."""
    return ipaddress.ip_address(address).version == 6


def _dhcp_ports(config):
    if is_ipv6(config["address"]):
        return (contract.DHCP6_SERVER_PORT, contract.PXE_PORT, contract.TFTP_PORT)
    return (contract.DHCP_SERVER_PORT, contract.PXE_PORT, contract.TFTP_PORT)


def _refuse_shared_udp_ports(config):
    """Fail when another process already serves DHCP, PXE or TFTP here.

    Binding alone does not tell: dnsmasq and this server both set SO_REUSEADDR, and Linux then lets two UDP
    sockets share port 67 and hands each broadcast to both, so two servers would answer every client.
    """
    for port in _dhcp_ports(config):
        holder = preflight.port_holder("udp", port)
        if holder:
            raise ServerError("cannot listen on UDP port %d (interface %s): held by %s; stop it, or run Nixie on "
                              "another machine of the boot network" % (port, config["interface"], holder))


def _explain_bind_failure(protocol, port, exc):
    if exc.errno == errno.EADDRINUSE:
        holder = preflight.port_holder(protocol, port)
        if holder:
            return "%s; held by %s" % (exc, holder)
    return str(exc)


def _tokens(run_dir, hosts):
    """The token store, with the tokens an earlier server of this run directory handed out and nobody claimed.

    Their installers keep presenting them to the same URL: a rerun after the server was killed takes their
    phone-homes instead of leaving them waiting for a power cycle.
    """
    path = contract.run_file(run_dir, contract.TOKENS_FILE)
    outstanding = read_outstanding(path)
    served = {host.mac for host in hosts}
    # Hosts outside this run (a --limit) keep theirs for a later run.
    others = {mac: token for mac, token in outstanding.items() if mac not in served}
    tokens = TokenStore(journal=lambda current: write_outstanding(path, {**others, **current}))
    tokens.adopt({host.mac: outstanding[host.mac] for host in hosts if host.mac in outstanding and not host.installed})
    return tokens


def ensure_file_limit(host_count: int) -> int:
    """Raise RLIMIT_NOFILE to ``files_needed(host_count)`` if it is lower (the hard limit too, which root may); return
    the soft limit.

    Raises ServerError when it cannot: out of descriptors, accept() fails and a server thread with it, so the
    server refuses to start rather than fail under load.
    """
    needed = files_needed(host_count)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard if hard == resource.RLIM_INFINITY else max(hard, needed)))
        except (OSError, ValueError) as exc:
            raise ServerError("the boot server needs %d open files (HTTP %d, TFTP %d, other %d) and may open %d (hard limit %d): %s; "
                              "raise the limit (ulimit -n %d, or LimitNOFILE= for a service)"
                              % (needed, HTTP_FILES, 2 * tftp_transfers(host_count), OTHER_FILES, soft, hard, exc, needed)) from None
    return max(soft, needed) if soft != resource.RLIM_INFINITY else soft


def _budgeted_loop_errors(log: LogBudget) -> Callable[[asyncio.AbstractEventLoop, Dict[str, Any]], None]:
    """The loop's exception handler: asyncio reports each failed accept() (EMFILE) and callback; a few lines per kind
    and interval, then a count, never a line per event."""
    def handle(dummy_loop, context):
        exc = context.get("exception")
        log.log(("event loop:", context.get("message"), type(exc).__name__), logging.ERROR, "event loop: %s: %s",
                context.get("message"), exc, exc_info=exc if not isinstance(exc, OSError) else None)
    return handle


async def _serve(config, ready):
    hosts, binaries, installers = validate_config(config)
    ensure_file_limit(len(hosts))
    # tftpy logs every malformed or refused packet at ERROR; tftp.py records those as events already, and a
    # scanner on the boot network must not be able to fill server.log.
    logging.getLogger("tftpy").setLevel(logging.CRITICAL)
    run_dir = config["run_dir"]
    address = ServerAddress(config["address"], config["http_port"])
    table = HostTable(hosts, _tokens(run_dir, hosts), neighbour_mac=neighbour_mac)
    events = EventLog(run_dir, table)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_budgeted_loop_errors(LogBudget(_LOG)))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    # IPv6 has no ARP cache to read; proxy DHCPv6 learns each client's address from its port-4011 Request.
    memo = ClientMemo()

    def on_tftp_event(step, client_ip, **fields):
        # Called from the TFTP thread; the event log is thread-safe.
        # The ARP cache, filled by the DHCP exchange, knows an on-link client's MAC; behind a relay only the exchange does.
        mac = memo.mac(client_ip) if ":" in client_ip else neighbour_mac(client_ip) or table.mac_at(client_ip)
        events.record(mac, step, ip=client_ip, **fields)

    published = {
        "address": address.ip,
        "http_port": address.http_port,
        "http_url": address.http_base,
        "interface": config["interface"],
        "ipxe_binaries": sorted(binaries),
        "events_file": events.path,
        "config_digest": config_digest(config),
    }
    state = BootState(
        table=table, installer=installers[own_system(config)], installers=installers, ipxe_dir=config["ipxe_dir"],
        authorized_key=config["authorized_key"], events=events, base_urls=[address.http_base],
        controller_secret=create_controller_secret(run_dir), published=published, on_all_released=stopping.set,
    )
    runner = tftp = proxy = None
    try:
        try:
            runner = await start_http(make_app(state), address.ip, address.http_port)
        except OSError as exc:
            raise ServerError("cannot listen on TCP port %d (%s): %s" % (
                address.http_port, address.ip, _explain_bind_failure("tcp", address.http_port, exc))) from None
        tftp = TftpServer(binaries, host=address.ip, port=contract.TFTP_PORT, on_event=on_tftp_event,
                          max_transfers=tftp_transfers(len(hosts)))
        try:
            tftp.start()
        except OSError as exc:
            raise ServerError("cannot listen on UDP port %d (%s): %s" % (
                contract.TFTP_PORT, address.ip, _explain_bind_failure("udp", contract.TFTP_PORT, exc))) from None
        try:
            booter = Booter(table, address, binaries)
            if is_ipv6(address.ip):
                sizes = {name: os.path.getsize(path) for name, path in binaries.items()}
                proxy = await start_proxydhcp6(config["interface"], booter, events.record, sizes, memo)
            else:
                proxy = await start_proxydhcp(config["interface"], booter, events.record)
        except PortBindError as exc:
            raise ServerError(_explain_bind_failure("udp", exc.port, exc)) from None
        # What start-up made (modules, aiohttp, the host table) lives as long as the server: out of the collector's
        # sight, a full collection during a rack's DISCOVER burst stops the loop for ~1 ms instead of ~60 (measured, P4).
        gc.freeze()
        ready(published)
        await stopping.wait()
    finally:
        if proxy is not None:
            proxy.close()
        if tftp is not None:
            tftp.stop()
        if runner is not None:
            await runner.cleanup()
        events.close()


def run(config: Dict[str, Any], ready: Callable[[Mapping[str, Any]], None]) -> None:
    """Serve ``config`` until SIGTERM; ``ready(state)`` is called once every port is bound."""
    asyncio.run(_serve(config, ready))


def start(config: Dict[str, Any], timeout: float = 30.0) -> Dict[str, Any]:
    """Start the boot server for ``config`` as a daemon; return its published state."""
    validate_config(config)
    problem = preflight.missing_privileges()
    if problem:
        raise ServerError(problem)
    _refuse_shared_udp_ports(config)
    make_run_dir(config["run_dir"])
    with open(contract.run_file(config["run_dir"], contract.CONFIG_FILE), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
    try:
        return daemon.start_detached(config["run_dir"], lambda ready: run(config, ready), timeout)
    except daemon.DaemonError as exc:
        raise ServerError(str(exc), **exc.details) from None
