# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Install one host with nixos-anywhere, safely.

Before nixos-anywhere may touch the machine: its disks must be blank unless the user allowed wiping them,
and the SSH host key answering at the target address must be the one the host's agent reported (nixos-anywhere
itself turns host key checking off; its ssh gets the reported keys pinned, see ``pinning_ssh``). The host's future
SSH host key is generated here and handed over with ``--extra-files``, so the installed system's key is known, and pinned, before it first boots. While
nixos-anywhere runs, the boot server knows the host as installed: its reboot into the new system must not
netboot the installer again.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

from ansible_collections.nixie.provision.plugins.module_utils._bootclient import BootServerClient, connect
from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import SSH_KEY_TYPES, key_identity
from ansible_collections.nixie.provision.plugins.module_utils._disks import check_disks
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._hosts import host_name
from ansible_collections.nixie.provision.plugins.module_utils._mac import normalize_mac
from ansible_collections.nixie.provision.plugins.module_utils._process import CommandNotStarted, CommandTimeout, run_with_deadline
from ansible_collections.nixie.provision.plugins.module_utils._rundir import make_run_dir

LOG_TAIL_LINES = 20
HOST_KEY_PATH = "etc/ssh/ssh_host_ed25519_key"
# nixos-anywhere announces each step as "### <step> ###" (its step()); the ones that start a phase of ours.
PHASE_MARKERS = (("### Formatting hard drive with disko", "disko"), ("### Installing NixOS", "install"), ("### Rebooting", "reboot"),
                 ("### Waiting for the machine to become unreachable due to reboot", "reboot"))
# How often the log is read for a new phase while nixos-anywhere runs.
PHASE_POLL_SECONDS = 0.5
# nixos-anywhere's --generate-hardware-config backends that Nixie passes on (nixos-generate-config's output needs the
# machine's filesystems, which disko has not made yet when nixos-anywhere runs it).
HARDWARE_CONFIG_BACKENDS = ("nixos-facter",)
_NOT_TEXT = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")

# nixie.provision.install's options (documented in plugins/modules/install.py), for its action plugin and its module.
ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    mac=dict(type="str"),
    server_url=dict(type="str"),
    server_secret=dict(type="str", no_log=True),
    flake=dict(type="str"),
    flake_attr=dict(type="str"),
    toplevel=dict(type="str"),
    disko_script=dict(type="str"),
    disk_devices=dict(type="dict"),
    target=dict(type="str", required=True),
    ssh_private_key=dict(type="path", required=True, no_log=False),
    agent_report=dict(type="dict", required=True),
    disks_may_be_wiped=dict(type="bool", default=False),
    run_dir=dict(type="path", required=True),
    substitute_on_destination=dict(type="bool", default=False),
    extra_args=dict(type="list", elements="str", default=[]),
    generate_hardware_config=dict(type="str"),
    hardware_config_path=dict(type="path"),
    nixos_anywhere=dict(type="str", default="nixos-anywhere"),
    timeout=dict(type="int", default=3600),
)
REQUIRED_TOGETHER = [("toplevel", "disko_script")]
REQUIRED_ONE_OF = [("flake", "toplevel")]


class InstallError(NixieError):
    """The host was not installed; the message says why and where the log is."""


def verify_host_key(target: str, reported_keys: Iterable[str], timeout: int = 10) -> None:
    """Raise InstallError unless an SSH host key ``target`` answers with is one its agent reported.

    A key answering that the agent never reported means another machine holds the address now: installing
    there would wipe the wrong disks.
    """
    if isinstance(reported_keys, str):
        raise InstallError("the agent of %s reported its SSH host keys as one string, not a list of key lines" % target)
    expected = {key_identity(line) for line in reported_keys} - {None}
    if not expected:
        raise InstallError("the agent of %s reported no SSH host key to check it against" % target)
    # ssh-keyscan connects once per key type: asking for the reported types alone saves the other handshakes, and
    # an impostor offering none of them fails as one offering other keys does.
    scanned_types = {SSH_KEY_TYPES.get(key_type) for key_type, dummy in expected}
    type_option = ["-t", ",".join(sorted(scanned_types))] if None not in scanned_types else []
    try:
        scan = run_with_deadline(["ssh-keyscan", "-T", str(timeout), *type_option, target], timeout + 5, grace=0)
    except (CommandNotStarted, CommandTimeout) as exc:
        raise InstallError("cannot scan the SSH host key of %s: %s" % (target, exc.__cause__)) from None
    offered = {key_identity(line) for line in scan.stdout.splitlines() if line and not line.startswith("#")} - {None}
    if not offered:
        raise InstallError("%s offers no SSH host key (ssh-keyscan: %s)" % (target, scan.stderr.strip()[-300:] or "no answer"))
    if not offered & expected or offered - expected:
        raise InstallError("the SSH host key at %s is not the one its agent reported: another machine may hold the address; "
                           "nothing was installed" % target, offered=sorted(" ".join(k) for k in offered))


def ensure_host_key(extra_files: str, name: str) -> str:
    """Create (once) the host's future ed25519 host key under ``extra_files``; return its public key line."""
    private = os.path.join(extra_files, HOST_KEY_PATH)
    if not os.path.exists(private):
        os.makedirs(os.path.dirname(private), mode=0o755, exist_ok=True)
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@%s" % name, "-f", private]
        try:
            made = run_with_deadline(argv, None)
        except CommandNotStarted as exc:
            raise InstallError(str(exc)) from None
        if made.returncode != 0:
            raise InstallError("ssh-keygen could not create %s: %s" % (private, made.stderr.strip()))
    with open(private + ".pub", encoding="utf-8") as handle:
        return handle.read().strip()


def pin_host_key(known_hosts: str, name: str, host_key: str) -> str:
    """Write ``known_hosts`` with ``host_key`` under ``name`` alone and return its path.

    Pinned under the host's name (ssh's HostKeyAlias), not its address: the installed system may come back on
    another DHCP address.
    """
    return pin_host_keys(known_hosts, name, [host_key])


def pin_host_keys(known_hosts: str, name: str, host_keys: Iterable[str]) -> str:
    """Write ``known_hosts`` with each of ``host_keys`` under ``name`` alone and return its path."""
    with open(known_hosts, "w", encoding="utf-8") as handle:
        handle.writelines("%s %s\n" % (name, key) for key in host_keys)
    return known_hosts


def pinning_ssh(directory: str, name: str, known_hosts: str, ssh: Optional[str] = None) -> str:
    """Write an ``ssh`` into ``directory`` that trusts only the keys ``known_hosts`` pins under ``name``; return ``directory``.

    nixos-anywhere puts ``-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no`` before the user's
    ``--ssh-option``s and ssh keeps the first value of each option, so host key checking cannot be turned back on
    through them. This ssh, first on nixos-anywhere's PATH (its package puts its own openssh last, to prefer the
    system's), gives ssh the pinned options before nixos-anywhere's: every connection of the install (ssh-copy-id,
    ssh, nix copy's ssh) then refuses a machine that took over the address after the check of ``verify_host_key``.
    """
    real_ssh = ssh or shutil.which("ssh")
    if not real_ssh:
        raise InstallError("no ssh on PATH for nixos-anywhere to reach %s with" % name)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, "ssh")
    options = ["UserKnownHostsFile=%s" % ssh_literal(known_hosts), "GlobalKnownHostsFile=/dev/null", "StrictHostKeyChecking=yes", "HostKeyAlias=%s" % name]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("#!/bin/sh\n# nixie.provision.install: the installer of %s, with the host keys its agent reported only.\nexec %s %s \"$@\"\n" % (
            name, shlex.quote(os.path.realpath(real_ssh)), " ".join("-o %s" % shlex.quote(option) for option in options)))
    os.chmod(path, 0o755)
    return directory


def pinned_environment(ssh_directory: str, environment: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """``environment`` (default: this process's) with ``ssh_directory`` first on PATH."""
    environment = dict(os.environ if environment is None else environment)
    environment["PATH"] = os.pathsep.join(part for part in (ssh_directory, environment.get("PATH", os.defpath)) if part)
    return environment


def ssh_literal(value: str) -> str:
    """``value`` as ssh reads it back from an option that expands %-tokens (HostName, UserKnownHostsFile): the scope of
    fe80::1%eth0 would otherwise be taken for the token %e."""
    return value.replace("%", "%%")


def hardware_config(name: str, backend: Optional[str], path: Optional[str]) -> Optional[List[str]]:
    """nixos-anywhere's ``--generate-hardware-config`` arguments for host ``name``, or None without ``backend``.

    Raises InstallError naming the host and the field for a backend other than nixos-facter, or one without a path.
    """
    if backend is None:
        return None
    if backend not in HARDWARE_CONFIG_BACKENDS:
        raise InstallError("%s: generate_hardware_config must be one of %s, not %r" % (name, ", ".join(HARDWARE_CONFIG_BACKENDS), backend))
    if not path:
        raise InstallError("%s: hardware_config_path: needed with generate_hardware_config %s" % (name, backend))
    return ["--generate-hardware-config", backend, path]


def nixos_anywhere_command(executable: str, name: str, address: str, private_key: str, extra_files: str, substitute_on_destination: bool,
                           extra_args: Iterable[str], store_paths: Optional[Sequence[str]] = None, flake: Optional[str] = None,
                           generate_hardware_config: Optional[Sequence[str]] = None) -> List[str]:
    """nixos-anywhere's command line for host ``name`` at ``address``.

    With ``store_paths`` (the host's built ``diskoScript`` and ``toplevel``), nixos-anywhere copies and runs them
    and evaluates nothing; ``flake`` (``<flake>#<attribute>``) is for a caller that has not built them, and for a host
    whose hardware report nixos-anywhere writes first (``generate_hardware_config``, from ``hardware_config``): the
    configuration that reads it can only be evaluated after that, so such a host is evaluated and built by
    nixos-anywhere, whatever was built before.
    The target is the host's name, an alias that ``HostName`` maps to the address: no tool in nixos-anywhere's chain
    (ssh, nix's ssh:// store URLs, rsync) then has to parse an IPv6 literal or a scoped link-local address, and ssh
    alone reads the address, with its zone's % escaped.
    """
    if generate_hardware_config:
        if not flake:
            raise InstallError("%s: flake: needed with generate_hardware_config, since nixos-anywhere evaluates the configuration after "
                               "writing its hardware report, and built store paths cannot include it" % name)
        source = ["--flake", flake] + list(generate_hardware_config)
    elif store_paths:
        source = ["--store-paths"] + list(store_paths)
    elif flake:
        source = ["--flake", flake]
    else:
        raise InstallError("installing %s: neither the built store paths nor a flake to build them from" % name)
    command = [executable] + source + [
        "--target-host", "root@%s" % name, "--ssh-option", "HostName=%s" % ssh_literal(address), "-i", private_key,
        # kexec is skipped: the machine already runs the NixOS installer Nixie netbooted.
        "--phases", "disko,install,reboot", "--extra-files", extra_files,
    ]
    if not substitute_on_destination:
        command.append("--no-substitute-on-destination")
    return command + list(extra_args)


def _tail(path, lines=LOG_TAIL_LINES):
    with open(path, encoding="utf-8", errors="replace") as handle:
        return "".join(handle.readlines()[-lines:])


def install_phase(line: str) -> Optional[str]:
    """The phase (one of ``contract.INSTALL_PHASES``) a line of nixos-anywhere's output starts, or None."""
    for marker, phase in PHASE_MARKERS:
        if line.startswith(marker):
            return phase
    return None


@contextlib.contextmanager
def watching_phases(log_path: str, on_phase: Optional[Callable[[str], None]]) -> Iterator[None]:
    """Call ``on_phase`` with each new phase nixos-anywhere's output in ``log_path`` starts, from its current end on."""
    if on_phase is None:
        yield
        return
    stop = threading.Event()
    start = os.path.getsize(log_path)

    def watch():
        last = None
        with open(log_path, encoding="utf-8", errors="replace") as log:
            log.seek(start)
            pending = ""
            while True:
                finished = stop.is_set()
                pending += log.read()
                lines = pending.split("\n")
                pending = lines.pop()
                for line in lines:
                    phase = install_phase(line)
                    if phase is not None and phase != last:
                        last = phase
                        on_phase(phase)
                if finished:
                    return
                stop.wait(PHASE_POLL_SECONDS)

    watcher = threading.Thread(target=watch, name="nixos-anywhere phases", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def run_logged(command: Sequence[str], log_path: str, timeout: int, on_phase: Optional[Callable[[str], None]] = None,
               env: Optional[Mapping[str, str]] = None) -> float:
    """Run ``command`` with its output appended to ``log_path``; kill its whole process group at the deadline.

    nixos-anywhere waits in unbounded loops (for SSH, for the reboot), so only a deadline ends a stuck install.
    ``on_phase`` hears of each phase the output starts (``install_phase``) while it runs; ``env`` is its environment.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    started = time.monotonic()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("\n=== %s: %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), " ".join(command)))
        log.flush()
        try:
            with watching_phases(log_path, on_phase):
                returncode = run_with_deadline(command, timeout, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        except CommandNotStarted as exc:
            raise InstallError(str(exc), log=log_path) from None
        except CommandTimeout:
            raise InstallError("%s did not finish within %d s and was stopped; log: %s\n%s" % (
                os.path.basename(command[0]), timeout, log_path, _tail(log_path)), log=log_path) from None
    if returncode != 0:
        raise InstallError("%s failed (exit %d); log: %s\n%s" % (os.path.basename(command[0]), returncode, log_path, _tail(log_path)),
                           log=log_path, rc=returncode)
    return time.monotonic() - started


def tell_boot_server(client: BootServerClient, mac: str, installed: bool) -> None:
    """Tell the boot server whether ``mac`` is installed (its script then boots the disk, else the installer)."""
    try:
        client.mark_installed(mac, installed)
    except NixieError as exc:
        raise InstallError("cannot tell the boot server that %s is %s: %s"
                           % (mac, "installed" if installed else "not installed", exc)) from None


class PhaseReporter:
    """Tells the boot server, if there is one, which phase the install of ``mac`` is in, for its status page.

    Best effort: the page is for people watching, so a server that does not answer never fails the install.
    """

    def __init__(self, client: Optional[BootServerClient], mac: Optional[str]) -> None:
        self.client = client if mac is not None else None
        self.mac = mac

    def __call__(self, phase: str, error: Optional[str] = None) -> None:
        if self.client is None:
            return
        # nixos-anywhere's output may hold colour codes and tabs: the server takes lines of plain text.
        fields = {"phase": phase} if error is None else {"phase": phase, "error": _NOT_TEXT.sub(" ", error)[-contract.INSTALL_ERROR_LIMIT:]}
        try:
            self.client.progress(self.mac, contract.STEP_INSTALL, **fields)
        except NixieError:
            pass

    @contextlib.contextmanager
    def reporting(self) -> Iterator[None]:
        """Report the start, then the end: done, or failed with the error's message."""
        self(contract.INSTALL_STARTED)
        try:
            yield
        except InstallError as exc:
            self(contract.INSTALL_FAILED, str(exc))
            raise
        self(contract.INSTALL_DONE)


@contextlib.contextmanager
def known_installed(client: Optional[BootServerClient], mac: Optional[str]) -> Iterator[bool]:
    """Have the boot server, if there is one, boot ``mac`` from disk; undo that when the body fails.

    Yields whether a boot server was told (never without ``mac``).
    """
    told = client is not None and mac is not None
    if told:
        tell_boot_server(client, mac, True)
    try:
        yield told
    except InstallError:
        if told:
            try:
                tell_boot_server(client, mac, False)
            except InstallError:
                # The install's own failure is the one to report; a server that no longer answers boots nothing.
                pass
        raise


def install_host(params: Mapping[str, Any], check_mode: bool) -> Dict[str, Any]:
    """nixie.provision.install's result for ``params`` (validated against ARGUMENT_SPEC), wherever it runs.

    Checks the disks, then (unless in ``check_mode``) pins the host keys, tells the boot server and runs
    nixos-anywhere. A failure is a result with ``failed`` and ``msg``, and the log's path.
    """
    try:
        host_name(params["name"])
    except ValueError as exc:
        return dict(failed=True, msg="name: %s" % exc)
    if params["timeout"] < 1:
        return dict(failed=True, msg="timeout: must be at least 1 second, got %d" % params["timeout"])
    try:
        mac = normalize_mac(params["mac"]) if params["mac"] else None
    except ValueError as exc:
        return dict(failed=True, msg="mac: %s" % exc)
    log = contract.host_file(params["run_dir"], params["name"], contract.HOST_INSTALL_LOG)
    try:
        return _install(params, mac, log, check_mode)
    except NixieError as exc:
        return dict(exc.details, failed=True, msg=str(exc), log=log)


def _install(params: Mapping[str, Any], mac: Optional[str], log: str, check_mode: bool) -> Dict[str, Any]:
    extra_files = contract.host_file(params["run_dir"], params["name"], contract.HOST_EXTRA_FILES)
    report = params["agent_report"]
    check_disks(params["name"], report.get("disks"), params["disks_may_be_wiped"], params["disk_devices"])
    store_paths = (params["disko_script"], params["toplevel"]) if params["toplevel"] else None
    # Built store paths win over the flake, except for a host whose hardware report nixos-anywhere writes first.
    flake = params["flake"] and "%s#%s" % (params["flake"], params["flake_attr"] or params["name"])
    generate = hardware_config(params["name"], params["generate_hardware_config"],
                               params["hardware_config_path"] or contract.host_file(params["run_dir"], params["name"], contract.HOST_FACTER))
    command = nixos_anywhere_command(
        params["nixos_anywhere"], params["name"], params["target"], params["ssh_private_key"], extra_files,
        params["substitute_on_destination"], params["extra_args"], store_paths=store_paths, flake=flake, generate_hardware_config=generate,
    )
    if check_mode:
        return dict(changed=True, command=command, log=log)
    make_run_dir(os.path.dirname(log))
    host_key = ensure_host_key(extra_files, params["name"])
    known_hosts = pin_host_key(contract.host_file(params["run_dir"], params["name"], contract.HOST_KNOWN_HOSTS), params["name"], host_key)
    verify_host_key(params["target"], report.get("ssh_host_keys") or [])
    installer_known_hosts = pin_host_keys(
        contract.host_file(params["run_dir"], params["name"], contract.HOST_INSTALLER_KNOWN_HOSTS), params["name"], report["ssh_host_keys"])
    ssh_directory = pinning_ssh(contract.host_file(params["run_dir"], params["name"], contract.HOST_INSTALLER_SSH), params["name"],
                                installer_known_hosts)
    client = connect(params["server_url"], params["run_dir"], params["server_secret"]) if mac else None
    phases = PhaseReporter(client, mac)
    with known_installed(client, mac) as told, phases.reporting():
        seconds = run_logged(command, log, params["timeout"], on_phase=phases, env=pinned_environment(ssh_directory))
    return dict(changed=True, command=command, log=log, host_key=host_key, known_hosts=known_hosts, boot_server_told=told,
                seconds=round(seconds, 1))
