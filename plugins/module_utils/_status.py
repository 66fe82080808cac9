# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is a host installed? Find its address, ask it over SSH what it runs, and compare with the flake.

A host is ``installed`` when ``/etc/os-release`` says NixOS (without ``VARIANT_ID=installer``) and
``/run/current-system`` resolves to the toplevel the flake evaluates to for it. The remote side is one
POSIX ``sh`` command run by the real ``ssh`` binary, so the user's SSH configuration (jump hosts, agents)
applies; its output is split and classified by pure functions.
"""

from __future__ import annotations

import collections
import os
import re
import shlex
import socket
import tempfile
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.nixie.provision.plugins.module_utils import _nix
from ansible_collections.nixie.provision.plugins.module_utils._bootclient import BootServerClient
from ansible_collections.nixie.provision.plugins.module_utils._discover import METHODS, Deadline, Discovery
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._power import settings as power_settings
from ansible_collections.nixie.provision.plugins.module_utils._process import CommandTimeout, run_with_deadline

PROBE_TIMEOUT = 3.0
SSH_CONNECT_TIMEOUT = 10
COMMAND_TIMEOUT = 5.0
BMC_TIMEOUT = 20.0

# Marks the sections of the remote command's output; no os-release line or store path can look like it.
_MARK = "@@nixie-status"
# Each section starts on a line of its own even when the file before it lacks a final newline.
# nixie.api= on the kernel command line means Nixie's boot server booted this machine: whatever its
# os-release says (the lab's busybox installer has none), it is an installer. Only "yes" is printed,
# never the command line, which carries the agent's token.
REMOTE_SCRIPT = "; ".join((
    "echo '%(mark)s os-release'",
    "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null",
    "echo; echo '%(mark)s current-system'",
    "readlink /run/current-system 2>/dev/null",
    "echo '%(mark)s nixie-boot'",
    "grep -q 'nixie[.]api=' /proc/cmdline 2>/dev/null && echo yes",
    "echo '%(mark)s end'",
)) % {"mark": _MARK}
# The login shell may not be a POSIX shell (fish, nushell), so the script goes to sh explicitly.
REMOTE_COMMAND = "sh -c %s" % shlex.quote(REMOTE_SCRIPT)
# In the background, so that ssh returns before the connection drops; -f: an installer has nothing to shut down.
REBOOT_COMMAND = "sh -c %s" % shlex.quote("reboot -f >/dev/null 2>&1 &")

# What the provisioning flow does with a host, decided from its state (see ``decide``).
NETBOOT = "netboot"
SKIP = "skip"
# Unreachable causes that mean nothing answered at all: a blank machine that is off looks like this.
_SILENT = ("no_address", "no_answer")

_ESCAPED = re.compile(r"\\([$\"\\`])")

ProbeOutput = collections.namedtuple("ProbeOutput", "os_release_text current_system nixie_boot")


class IncompleteOutput(ValueError):
    """The remote command's output lacks its end marker."""


# Pure functions

def parse_os_release(text: Optional[str]) -> Dict[str, str]:
    """``/etc/os-release`` as a dict (os-release(5)): ``KEY=value`` lines, values optionally shell-quoted."""
    fields = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if not key.replace("_", "").isalnum():
            continue
        fields[key] = _unquote(value)
    return fields


def _unquote(value):
    # os-release(5): a value may be in single or double quotes, and \$ \" \\ \` stand for the character.
    # A value with an unbalanced quote is kept as it is rather than lost.
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return _ESCAPED.sub(r"\1", value)


def is_installer(os_release: Mapping[str, str], nixie_boot: bool = False) -> bool:
    return nixie_boot or os_release.get("VARIANT_ID") == "installer"


def classify(os_release_text: str, current_system: Optional[str], expected_system: Optional[str], nixie_boot: bool = False) -> str:
    """The host's state from what it reported: installed, outdated, installer or other_os (unreachable is decided before this).

    Without ``expected_system`` a NixOS host counts as installed when it has a ``/run/current-system``: its
    system was not compared, which the caller must say.
    """
    os_release = parse_os_release(os_release_text)
    if is_installer(os_release, nixie_boot):
        return "installer"
    if os_release.get("ID") != "nixos":
        return "other_os"
    if not current_system:
        return "outdated"
    if expected_system is None or current_system == expected_system:
        return "installed"
    return "outdated"


def describe(state: str, os_release: Mapping[str, str], current_system: Optional[str], expected_system: Optional[str],
             nixie_boot: bool = False) -> str:
    """One sentence on why ``classify`` decided ``state``, for the module's ``reason``."""
    if state == "installer":
        if nixie_boot:
            return "it was booted by Nixie's boot server (nixie.api= on its kernel command line)"
        return "its /etc/os-release has VARIANT_ID=installer: %s" % os_release.get("PRETTY_NAME", "NixOS installer")
    if state == "other_os":
        if not os_release:
            return "it has no /etc/os-release, so it is not NixOS"
        return "it runs %s (ID=%s), not NixOS" % (os_release.get("PRETTY_NAME", os_release.get("NAME", "?")), os_release.get("ID", "linux"))
    if not current_system:
        return "it runs NixOS but has no /run/current-system, so its system is unknown"
    if expected_system is None:
        return ("it runs NixOS with /run/current-system -> %s; that system was not compared with the flake "
                "(give expected_system, or flake and flake_attr)" % current_system)
    if state == "installed":
        return "/run/current-system is the expected system %s" % expected_system
    return "/run/current-system is %s, not the expected %s" % (current_system, expected_system)


def decide(state: str, unreachable_cause: Optional[str], awaiting_phone_home: bool, reinstall: bool,
           bmc: bool = False, power_state: Optional[str] = None) -> Tuple[str, str]:
    """``(NETBOOT or SKIP, why)`` for a host found in ``state``: whether the flow may netboot (and so install) it.

    Only a machine that does not answer at all is taken for a blank one that is off. One that answers SSH with
    another host key, or refuses the key, runs something Nixie did not install, and is left alone; the exception is
    an installer a killed boot server handed a token, which refuses the key until its agent phones home (which it
    keeps trying, and a boot server started again on the same run directory takes). A system that is not the
    flake's is replaced only when the user asked for reinstalls, and an installed one only through a ``bmc``, which
    can power-cycle it into the network boot; ``power_state`` is what that BMC reports.
    """
    if state == "installed":
        if reinstall and bmc:
            return NETBOOT, "reinstall was asked for: its BMC power-cycles it into the network boot"
        return SKIP, "it is installed"
    if state == "installer":
        return NETBOOT, "it runs an installer, which is rebooted into a fresh netboot"
    if state in ("outdated", "other_os"):
        if reinstall:
            return NETBOOT, "reinstall was asked for" + (": its BMC power-cycles it into the network boot" if bmc else "")
        return SKIP, "set nixie_reinstall=true%s to reinstall" % ("" if bmc else " and power-cycle it")
    if unreachable_cause in _SILENT:
        if power_state == "off":
            return NETBOOT, "its BMC reports it powered off"
        return NETBOOT, "nothing answers: taken for a blank machine that is off"
    if unreachable_cause == "login_refused" and awaiting_phone_home:
        return NETBOOT, "its installer refuses the key until its agent phones home to the boot server"
    return SKIP, "it answers but could not be checked (%s): left alone" % unreachable_cause


def parse_probe_output(text: str) -> ProbeOutput:
    """Split the output of REMOTE_COMMAND into a ProbeOutput; raise IncompleteOutput when it was cut short."""
    sections = {}
    current = None
    for line in text.splitlines():
        if line.startswith(_MARK + " "):
            current = line[len(_MARK) + 1:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    if "end" not in sections:
        raise IncompleteOutput("the status command's output was cut short (no end marker): %r" % text[-200:])
    current_system = "\n".join(sections.get("current-system", [])).strip() or None
    return ProbeOutput(
        os_release_text="\n".join(sections.get("os-release", [])),
        current_system=current_system,
        nixie_boot="yes" in [line.strip() for line in sections.get("nixie-boot", [])],
    )


def ssh_argv(address: str, user: str, port: int, connect_timeout: float, known_hosts: str, pinned: bool, private_key: Optional[str] = None,
             options: Sequence[str] = (), command: str = REMOTE_COMMAND) -> List[str]:
    """The ssh command line that runs ``command`` (REMOTE_COMMAND or REBOOT_COMMAND) on ``address``.

    The user's ``options`` come first: OpenSSH keeps the first value it sees of an option, so they win.
    """
    argv = ["ssh"]
    for option in options:
        argv += ["-o", option]
    argv += [
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=%d" % max(int(connect_timeout), 1),
        "-o", "StrictHostKeyChecking=%s" % ("yes" if pinned else "accept-new"),
        # Quoted: ssh reads several space-separated files from this option.
        "-o", 'UserKnownHostsFile="%s"' % known_hosts,
        "-p", str(port),
        "-l", user,
    ]
    if private_key:
        argv += ["-i", private_key, "-o", "IdentitiesOnly=yes"]
    return argv + ["--", address, command]


def ssh_failure(returncode: int, stderr: str, target: str, known_hosts: Optional[str], pinned: bool) -> Tuple[str, str]:
    """``(cause, reason)`` of an ssh failure, from its exit status and error output.

    The cause keeps a host whose SSH server answered with an unexpected key (``host_key``), which may be a
    running system, apart from the other failures (``login_refused``, ``ssh_failed``).
    """
    # Left out: the banner of a changed host key (its facts are in the lines after it) and accept-new's notice.
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and not line.startswith("@") and not line.startswith("Warning: Permanently added")]
    detail = "; ".join(lines[-4:]) or "no error output"
    if "Host key verification failed" in stderr:
        if pinned:
            return "host_key", "SSH host key verification failed for %s: its host key is not the one pinned in %s (%s)" % (target, known_hosts, detail)
        return "host_key", "SSH host key verification failed for %s: %s" % (target, detail)
    if "Permission denied" in stderr:
        return "login_refused", "SSH login to %s was refused: %s" % (target, detail)
    return "ssh_failed", "ssh to %s failed (exit status %d): %s" % (target, returncode, detail)


# Input and output

def tcp_probe(address: str, port: int, timeout: float) -> Optional[str]:
    """None when ``address`` accepts a TCP connection on ``port`` within ``timeout`` s, else why not."""
    if timeout <= 0:
        return "not tried: the timeout was reached"
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "TCP port %d refused the connection" % port
    except socket.timeout:
        return "no answer on TCP port %d within %.1f s" % (port, timeout)
    except OSError as exc:
        return "TCP port %d: %s" % (port, exc.strerror or exc)


def known_hosts_lists(known_hosts: str, name: str) -> bool:
    """Whether ``known_hosts`` holds a key for ``name`` (hashed entries too: ``ssh-keygen -F`` reads them)."""
    if not os.path.isfile(known_hosts):
        return False
    try:
        done = run_with_deadline(["ssh-keygen", "-F", name, "-f", known_hosts], COMMAND_TIMEOUT, grace=0)
    except NixieError:
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


class StatusCheck:
    """Finds one host, asks it what it runs, classifies it and decides what the flow does with it.

    ``run()`` returns the module's result. Host problems (no address, SSH refused) are a state, ``unreachable``;
    only configuration errors (a flake that does not evaluate, an interface that does not exist) raise.
    ``server`` is the run's boot server (a BootServerClient), asked for the agent's report; ``known_hosts_pin``
    ``if_listed`` pins the host key only where ``known_hosts`` lists ``host_key_alias`` (a host an earlier run
    installed), so that a machine never installed is still told apart from one that is off.
    ``reboot_installer`` reboots a host found running an installer, over the connection whose key the check
    just saw, so that it netboots afresh; a host with a BMC (``power``, the host's power settings) is left to it.
    """

    def __init__(self, mac: str, ip: Optional[str] = None, interface: Optional[str] = None, server: Optional[BootServerClient] = None,
                 discovery: Optional[Sequence[str]] = None, expected_system: Optional[str] = None, flake: Optional[str] = None,
                 flake_attr: Optional[str] = None, ssh_user: str = "root", ssh_port: int = 22, ssh_private_key: Optional[str] = None,
                 known_hosts: Optional[str] = None, known_hosts_pin: str = "always", host_key_alias: Optional[str] = None,
                 ssh_options: Sequence[str] = (), timeout: float = 30, eval_timeout: float = 300, awaiting_phone_home: bool = False,
                 reinstall: bool = False, reboot_installer: bool = False, check_mode: bool = False,
                 power: Optional[Mapping[str, object]] = None, power_password: Optional[str] = None) -> None:
        self.deadline = Deadline(timeout)
        self.discovery = Discovery(mac, self.deadline, ip=ip, interface=interface, server=server,
                                   methods=METHODS if discovery is None else discovery)
        self.expected_system = expected_system
        self.flake = flake
        self.flake_attr = flake_attr
        self.ssh_user = ssh_user
        self.ssh_port = ssh_port
        self.ssh_private_key = ssh_private_key
        self.known_hosts = known_hosts
        self.known_hosts_pin = known_hosts_pin
        self.host_key_alias = host_key_alias
        self.ssh_options = list(ssh_options) + (["HostKeyAlias=%s" % host_key_alias] if host_key_alias else [])
        self.eval_timeout = eval_timeout
        self.awaiting_phone_home = awaiting_phone_home
        self.reinstall = reinstall
        self.reboot_installer = reboot_installer
        self.check_mode = check_mode
        self.power = dict(power or power_settings.DEFAULT)
        self.power_password = power_password
        self.started = time.monotonic()

    @property
    def warnings(self) -> List[str]:
        return self.discovery.warnings

    def run(self) -> dict:
        result = {"changed": False, "ip": None, "ip_source": None, "state": "unreachable", "current_system": None,
                  "expected_system": self.expected_system, "os_release": {}, "reason": None, "unreachable_cause": None,
                  "awaiting_phone_home": self.awaiting_phone_home, "rebooted": False, "power_state": None, "boot_override": None}
        bmc = self.power["driver"] != "wol"
        if bmc:
            result.update(self._ask_bmc())
        # One scratch known_hosts for the whole check: a reboot goes to the host key the probe saw.
        with tempfile.TemporaryDirectory(prefix="nixie-status-") as scratch:
            self._check(result, scratch)
        action, why = decide(result["state"], result["unreachable_cause"], self.awaiting_phone_home, self.reinstall,
                             bmc=bmc, power_state=result["power_state"])
        result.update(action=action, action_reason=why)
        return result

    def _check(self, result, scratch):
        reachable, tried = self._find_address()
        if reachable is None:
            if tried:
                result.update(ip=tried[0][0].address, ip_source=tried[0][0].source)
                reason = "no address answered: " + "; ".join("%s (%s): %s" % (c.address, c.source, why) for c, why in tried)
                result["unreachable_cause"] = "no_answer"
            else:
                reason = "no address found for %s: %s" % (self.discovery.mac, "; ".join(self.discovery.notes))
                result["unreachable_cause"] = "no_address"
            return self._finish(result, reason)
        result.update(ip=reachable.address, ip_source=reachable.source)
        ssh = self._ssh_to(reachable.address, scratch)
        output, cause, problem = self._ask(ssh)
        if problem:
            result["unreachable_cause"] = cause
            if cause == "login_refused" and self.awaiting_phone_home:
                problem += "; it was handed Nixie's installer, whose agent has not phoned home for the key yet"
            return self._finish(result, problem)
        os_release = parse_os_release(output.os_release_text)
        result.update(os_release=os_release, current_system=output.current_system)
        state = classify(output.os_release_text, output.current_system, self.expected_system, output.nixie_boot)
        if state == "installed" and self.expected_system is None and self.flake:
            # Only an installed-looking host needs the flake evaluated; installers and other systems do not.
            self.expected_system = self._evaluate()
            result["expected_system"] = self.expected_system
            state = classify(output.os_release_text, output.current_system, self.expected_system, output.nixie_boot)
        result["state"] = state
        reason = describe(state, os_release, output.current_system, self.expected_system, output.nixie_boot)
        if state == "installer" and self.reboot_installer:
            if self.power["driver"] == "wol":
                reason += "; " + self._reboot(ssh, result)
            else:
                reason += "; its BMC power-cycles it into a fresh netboot"
        return self._finish(result, reason)

    def _finish(self, result, reason):
        where = result["ip"] or self.discovery.mac
        result.update(reason=reason, msg="%s is %s: %s" % (where, result["state"], reason),
                      elapsed=round(time.monotonic() - self.started, 1))
        return result

    def _find_address(self):
        """The first candidate that accepts TCP on the SSH port, and the ``(candidate, why not)`` pairs tried before."""
        tried = []
        for candidate in self.discovery.candidates():
            problem = tcp_probe(candidate.address, self.ssh_port, self.deadline.bounded(PROBE_TIMEOUT))
            if problem is None:
                return candidate, tried
            tried.append((candidate, problem))
            if self.deadline.expired:
                break
        return None, tried

    def _ssh_to(self, address, scratch):
        """``(address, known_hosts, pinned)`` for every ssh call of this check."""
        pinned = self.known_hosts is not None and (
            self.known_hosts_pin == "always" or known_hosts_lists(self.known_hosts, self.host_key_alias or address))
        # Unpinned, the key is accepted into a file of this task alone: parallel tasks share nothing,
        # and a reinstalled host's new key never clashes with one remembered from before.
        return address, self.known_hosts if pinned else os.path.join(scratch, "known_hosts"), pinned

    def _ssh(self, ssh, command, pinned=None):
        address, known_hosts, was_pinned = ssh
        argv = ssh_argv(address, self.ssh_user, self.ssh_port, self.deadline.bounded(SSH_CONNECT_TIMEOUT), known_hosts,
                        pinned=was_pinned if pinned is None else pinned, private_key=self.ssh_private_key,
                        options=self.ssh_options, command=command)
        try:
            # No grace: the group (ssh and its ProxyCommand) holds nothing worth a clean exit, and the deadline is the user's.
            return run_with_deadline(argv, max(self.deadline.remaining(), 1.0), grace=0)
        except CommandTimeout:
            return None

    def _ask(self, ssh):
        """``(ProbeOutput, None, None)``, or ``(None, cause, why the host could not be asked)``."""
        address, known_hosts, pinned = ssh
        if self.deadline.expired:
            return None, "timeout", "%s answered on port %d, but the timeout was reached before SSH" % (address, self.ssh_port)
        target = "%s@%s" % (self.ssh_user, address)
        done = self._ssh(ssh, REMOTE_COMMAND)
        if done is None:
            return None, "timeout", "SSH to %s did not finish within the timeout" % target
        returncode, stdout, stderr = done
        if returncode == 255:
            cause, reason = ssh_failure(returncode, stderr, target, known_hosts, pinned)
            return None, cause, reason
        try:
            return parse_probe_output(stdout), None, None
        except IncompleteOutput as exc:
            return None, "ssh_failed", "SSH to %s worked, but %s (exit status %d, stderr: %s)" % (target, exc, returncode, stderr.strip()[-200:])

    def _reboot(self, ssh, result):
        """Reboot the installer the probe just saw, pinned to the host key it answered with; say what was done."""
        if self.check_mode:
            result["changed"] = True
            return "it would be rebooted to netboot afresh (check mode)"
        done = self._ssh(ssh, REBOOT_COMMAND, pinned=True)
        if done is None or done[0] != 0:
            detail = "timed out" if done is None else done[2].strip()[-200:] or "exit status %d" % done[0]
            return "rebooting it failed (%s); it netboots at its next power cycle" % detail
        result.update(changed=True, rebooted=True)
        return "it was rebooted to netboot afresh"

    def _ask_bmc(self):
        """The power state and pending boot override the host's BMC reports; a BMC that cannot be asked fails the check."""
        # Only here: the BMC libraries take a while to load, which a host without a BMC need not pay.
        from ansible_collections.nixie.provision.plugins.module_utils._power import connect  # pylint: disable=import-outside-toplevel
        driver = connect.open_driver(self.power, power_settings.password(self.power, self.power_password),
                                     timeout=self.deadline.bounded(BMC_TIMEOUT) or 1)
        try:
            return {"power_state": driver.power_state(), "boot_override": driver.boot_override()}
        finally:
            driver.close()

    def _evaluate(self):
        nix = _nix.Nix(timeout=self.eval_timeout)
        return _nix.toplevel_paths(nix, self.flake, [self.flake_attr])[self.flake_attr]
