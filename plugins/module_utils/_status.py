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

from ansible_collections.nixie.provision.plugins.module_utils import _nix
from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import TOKENS_FILE
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.tokens import read_outstanding
from ansible_collections.nixie.provision.plugins.module_utils._discover import METHODS, Deadline, Discovery
from ansible_collections.nixie.provision.plugins.module_utils._process import CommandTimeout, run_with_deadline

PROBE_TIMEOUT = 3.0
SSH_CONNECT_TIMEOUT = 10

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

_ESCAPED = re.compile(r"\\([$\"\\`])")

ProbeOutput = collections.namedtuple("ProbeOutput", "os_release_text current_system nixie_boot")


class IncompleteOutput(ValueError):
    """The remote command's output lacks its end marker."""


# Pure functions

def parse_os_release(text):
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


def is_installer(os_release, nixie_boot=False):
    return nixie_boot or os_release.get("VARIANT_ID") == "installer"


def classify(os_release_text, current_system, expected_system, nixie_boot=False):
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


def describe(state, os_release, current_system, expected_system, nixie_boot=False):
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


def parse_probe_output(text):
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


def ssh_argv(address, user, port, connect_timeout, known_hosts, pinned, private_key=None, options=()):
    """The ssh command line that runs REMOTE_COMMAND on ``address``.

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
    return argv + ["--", address, REMOTE_COMMAND]


def ssh_failure(returncode, stderr, target, known_hosts, pinned):
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

def tcp_probe(address, port, timeout):
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


class StatusCheck:
    """Finds one host, asks it what it runs and classifies it; ``run()`` returns the module's result.

    Host problems (no address, SSH refused) are a state, ``unreachable``; only configuration errors (a
    flake that does not evaluate, an interface that does not exist) raise.
    """

    def __init__(self, mac, ip=None, interface=None, run_dir=None, discovery=None, expected_system=None, flake=None, flake_attr=None,
                 ssh_user="root", ssh_port=22, ssh_private_key=None, known_hosts=None, ssh_options=(), timeout=30, eval_timeout=300):
        self.deadline = Deadline(timeout)
        self.discovery = Discovery(mac, self.deadline, ip=ip, interface=interface, run_dir=run_dir,
                                   methods=METHODS if discovery is None else discovery)
        self.expected_system = expected_system
        self.flake = flake
        self.flake_attr = flake_attr
        self.ssh_user = ssh_user
        self.ssh_port = ssh_port
        self.ssh_private_key = ssh_private_key
        self.known_hosts = known_hosts
        self.ssh_options = list(ssh_options)
        self.eval_timeout = eval_timeout
        self.started = time.monotonic()

    @property
    def warnings(self):
        return self.discovery.warnings

    def run(self):
        result = {"changed": False, "ip": None, "ip_source": None, "state": "unreachable", "current_system": None,
                  "expected_system": self.expected_system, "os_release": {}, "reason": None, "unreachable_cause": None,
                  "awaiting_phone_home": self._awaiting_phone_home()}
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
        output, cause, problem = self._ask(reachable.address)
        if problem:
            result["unreachable_cause"] = cause
            if cause == "login_refused" and result["awaiting_phone_home"]:
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
        return self._finish(result, describe(state, os_release, output.current_system, self.expected_system, output.nixie_boot))

    def _finish(self, result, reason):
        where = result["ip"] or self.discovery.mac
        result.update(reason=reason, msg="%s is %s: %s" % (where, result["state"], reason),
                      elapsed=round(time.monotonic() - self.started, 1))
        return result

    def _awaiting_phone_home(self):
        run_dir = self.discovery.run_dir
        return bool(run_dir) and self.discovery.mac in read_outstanding(os.path.join(run_dir, TOKENS_FILE))

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

    def _ask(self, address):
        """``(ProbeOutput, None, None)``, or ``(None, cause, why the host could not be asked)``."""
        if self.deadline.expired:
            return None, "timeout", "%s answered on port %d, but the timeout was reached before SSH" % (address, self.ssh_port)
        target = "%s@%s" % (self.ssh_user, address)
        with tempfile.TemporaryDirectory(prefix="nixie-status-") as scratch:
            # Unpinned, the key is accepted into a file of this task alone: parallel tasks share nothing,
            # and a reinstalled host's new key never clashes with one remembered from before.
            known_hosts = self.known_hosts or os.path.join(scratch, "known_hosts")
            argv = ssh_argv(address, self.ssh_user, self.ssh_port, self.deadline.bounded(SSH_CONNECT_TIMEOUT), known_hosts,
                            pinned=self.known_hosts is not None, private_key=self.ssh_private_key, options=self.ssh_options)
            try:
                # No grace: the group (ssh and its ProxyCommand) holds nothing worth a clean exit, and the deadline is the user's.
                returncode, stdout, stderr = run_with_deadline(argv, max(self.deadline.remaining(), 1.0), grace=0)
            except CommandTimeout:
                return None, "timeout", "SSH to %s did not finish within the timeout" % target
        if returncode == 255:
            cause, reason = ssh_failure(returncode, stderr, target, self.known_hosts, self.known_hosts is not None)
            return None, cause, reason
        try:
            return parse_probe_output(stdout), None, None
        except IncompleteOutput as exc:
            return None, "ssh_failed", "SSH to %s worked, but %s (exit status %d, stderr: %s)" % (target, exc, returncode, stderr.strip()[-200:])

    def _evaluate(self):
        nix = _nix.Nix(timeout=self.eval_timeout)
        return _nix.toplevel_paths(nix, self.flake, [self.flake_attr])[self.flake_attr]
