# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status check's pure parts (os-release, classification, the remote command's output, the ssh command line)
and StatusCheck's decisions with the network faked."""

from __future__ import annotations

import socket
import subprocess

import pytest

from ansible_collections.nixie.provision.plugins.module_utils import _status
from ansible_collections.nixie.provision.plugins.module_utils._discover import Candidate
from ansible_collections.nixie.provision.plugins.module_utils._process import CommandTimeout

SYSTEM = "/nix/store/8x0k7sbhhkhbnzxlvmh83dhxg5dpvw8n-nixos-system-nixie-01-24.11.20241201.af51545"
OTHER_SYSTEM = "/nix/store/1b9p07z77phvv2hf6gm9f28syp5xfk5i-nixos-system-nixie-01-24.11.20241130.0000000"

NIXOS = """ANSI_COLOR="1;34"
BUG_REPORT_URL="https://github.com/NixOS/nixpkgs/issues"
BUILD_ID="24.11.20241201.af51545"
CPE_NAME="cpe:/o:nixos:nixos:24.11"
DEFAULT_HOSTNAME=nixos
HOME_URL="https://nixos.org/"
ID=nixos
ID_LIKE=""
LOGO="nix-snowflake"
NAME=NixOS
PRETTY_NAME="NixOS 24.11 (Vicuna)"
VARIANT=""
VARIANT_ID=""
VERSION="24.11 (Vicuna)"
VERSION_CODENAME=vicuna
VERSION_ID="24.11"
"""
NIXOS_INSTALLER = NIXOS.replace('VARIANT=""', 'VARIANT="NixOS Installer"').replace('VARIANT_ID=""', "VARIANT_ID=installer")
DEBIAN = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""


def test_parse_os_release_unquotes_values_and_skips_comments():
    parsed = _status.parse_os_release(NIXOS)
    assert parsed["ID"] == "nixos" and parsed["PRETTY_NAME"] == "NixOS 24.11 (Vicuna)" and parsed["VARIANT_ID"] == ""
    text = "# a comment\n\nNAME='Single quoted'\nESCAPED=\"say \\\"hi\\\" \\$HOME\"\nBROKEN=\"unbalanced\nnot a field\n"
    assert _status.parse_os_release(text) == {"NAME": "Single quoted", "ESCAPED": 'say "hi" $HOME', "BROKEN": '"unbalanced'}
    assert _status.parse_os_release("") == {} and _status.parse_os_release(None) == {}


@pytest.mark.parametrize("os_release, current, expected, nixie_boot, state", [
    (NIXOS, SYSTEM, SYSTEM, False, "installed"),
    (NIXOS, OTHER_SYSTEM, SYSTEM, False, "outdated"),
    (NIXOS, None, SYSTEM, False, "outdated"),
    (NIXOS, SYSTEM, None, False, "installed"),  # not compared: describe() says so
    (NIXOS, None, None, False, "outdated"),
    (NIXOS_INSTALLER, SYSTEM, SYSTEM, False, "installer"),
    (NIXOS_INSTALLER, None, None, False, "installer"),
    # The lab's busybox installer: no os-release at all, booted by the boot server.
    ("", None, SYSTEM, True, "installer"),
    # An installed NixOS that is somehow on the boot server's kernel command line is still being installed.
    (NIXOS, SYSTEM, SYSTEM, True, "installer"),
    (DEBIAN, None, SYSTEM, False, "other_os"),
    (DEBIAN, SYSTEM, SYSTEM, False, "other_os"),
    ("", None, None, False, "other_os"),
    ("ID=nixosish\n", SYSTEM, SYSTEM, False, "other_os"),
])
def test_classify(os_release, current, expected, nixie_boot, state):
    assert _status.classify(os_release, current, expected, nixie_boot) == state


def test_describe_says_when_the_system_was_not_compared():
    reason = _status.describe("installed", _status.parse_os_release(NIXOS), SYSTEM, None)
    assert "not compared" in reason and SYSTEM in reason and "flake_attr" in reason
    assert _status.describe("installed", {}, SYSTEM, SYSTEM) == "/run/current-system is the expected system %s" % SYSTEM
    assert _status.describe("outdated", {}, OTHER_SYSTEM, SYSTEM) == "/run/current-system is %s, not the expected %s" % (OTHER_SYSTEM, SYSTEM)
    assert "no /run/current-system" in _status.describe("outdated", {"ID": "nixos"}, None, SYSTEM)
    assert "VARIANT_ID=installer" in _status.describe("installer", _status.parse_os_release(NIXOS_INSTALLER), None, None)
    assert "nixie.api=" in _status.describe("installer", {}, None, None, nixie_boot=True)
    assert _status.describe("other_os", _status.parse_os_release(DEBIAN), None, None) == "it runs Debian GNU/Linux 12 (bookworm) (ID=debian), not NixOS"
    assert "no /etc/os-release" in _status.describe("other_os", {}, None, None)


def remote_output(os_release, current="", nixie_boot=""):
    mark = "@@nixie-status"
    return "%s os-release\n%s\n%s current-system\n%s%s nixie-boot\n%s%s end\n" % (
        mark, os_release, mark, current + "\n" if current else "", mark, nixie_boot + "\n" if nixie_boot else "", mark)


def test_parse_probe_output():
    output = _status.parse_probe_output(remote_output(NIXOS, SYSTEM))
    assert output.current_system == SYSTEM and not output.nixie_boot
    assert _status.parse_os_release(output.os_release_text)["ID"] == "nixos"
    empty = _status.parse_probe_output(remote_output("", nixie_boot="yes"))
    assert empty.current_system is None and empty.nixie_boot and _status.parse_os_release(empty.os_release_text) == {}
    # A file without a final newline still leaves the next marker on a line of its own (the script echoes one).
    unterminated = _status.parse_probe_output(remote_output("ID=nixos", SYSTEM))
    assert _status.parse_os_release(unterminated.os_release_text) == {"ID": "nixos"} and unterminated.current_system == SYSTEM


def test_parse_probe_output_of_the_real_script_run_here():
    # The script itself, run by this machine's sh: whatever it reports, all sections are there.
    done = subprocess.run(["sh", "-c", _status.REMOTE_SCRIPT], capture_output=True, text=True, check=True, timeout=10)
    output = _status.parse_probe_output(done.stdout)
    assert _status.parse_os_release(output.os_release_text).get("ID")
    assert not output.nixie_boot


def test_parse_probe_output_cut_short():
    with pytest.raises(_status.IncompleteOutput, match="cut short"):
        _status.parse_probe_output(remote_output(NIXOS, SYSTEM).rsplit("@@nixie-status end", 1)[0])
    with pytest.raises(_status.IncompleteOutput):
        _status.parse_probe_output("")


def test_the_remote_command_never_prints_the_kernel_command_line():
    assert "cat /proc/cmdline" not in _status.REMOTE_SCRIPT
    assert "grep -q 'nixie[.]api=' /proc/cmdline" in _status.REMOTE_SCRIPT
    assert _status.REMOTE_COMMAND.startswith("sh -c '")


def test_ssh_argv_pinned_with_key_and_user_options_first():
    argv = _status.ssh_argv("10.0.0.5", "root", 22, 10, "/etc/nixie/known hosts", pinned=True, private_key="/k/id",
                            options=["ProxyJump=bastion", "StrictHostKeyChecking=no"])
    assert argv[:5] == ["ssh", "-o", "ProxyJump=bastion", "-o", "StrictHostKeyChecking=no"]
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv and "ConnectTimeout=10" in argv
    assert 'UserKnownHostsFile="/etc/nixie/known hosts"' in argv
    assert argv[argv.index("-i") + 1] == "/k/id" and "IdentitiesOnly=yes" in argv
    assert argv[-3:] == ["--", "10.0.0.5", _status.REMOTE_COMMAND]


def test_ssh_argv_unpinned_accepts_new_keys():
    argv = _status.ssh_argv("fe80::1%nixie0", "admin", 2222, 0.4, "/tmp/x/known_hosts", pinned=False)
    assert "StrictHostKeyChecking=accept-new" in argv and "ConnectTimeout=1" in argv and "-i" not in argv
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "admin"


CHANGED_KEY = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Host key for 10.0.0.5 has changed and you have requested strict checking.
Host key verification failed.
"""


def test_ssh_failure_reasons():
    cause, pinned = _status.ssh_failure(255, CHANGED_KEY, "root@10.0.0.5", "/etc/nixie/known_hosts", True)
    assert cause == "host_key"
    assert "host key" in pinned and "/etc/nixie/known_hosts" in pinned and "has changed" in pinned and "@@@" not in pinned
    denied = _status.ssh_failure(255, "root@10.0.0.5: Permission denied (publickey).\n", "root@10.0.0.5", None, False)
    assert denied == ("login_refused", "SSH login to root@10.0.0.5 was refused: root@10.0.0.5: Permission denied (publickey).")
    accepted_then_closed = "Warning: Permanently added '10.0.0.5' (ED25519) to the list of known hosts.\nConnection closed by 10.0.0.5 port 22\n"
    assert _status.ssh_failure(255, accepted_then_closed, "root@10.0.0.5", None, False) == (
        "ssh_failed", "ssh to root@10.0.0.5 failed (exit status 255): Connection closed by 10.0.0.5 port 22")
    assert _status.ssh_failure(255, "", "root@10.0.0.5", None, False) == ("ssh_failed", "ssh to root@10.0.0.5 failed (exit status 255): no error output")


def test_tcp_probe_on_loopback():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert _status.tcp_probe("127.0.0.1", port, 2) is None
    assert _status.tcp_probe("127.0.0.1", port, 2) == "TCP port %d refused the connection" % port
    assert _status.tcp_probe("127.0.0.1", port, 0) == "not tried: the timeout was reached"


class FakeHost:
    """Candidates for Discovery and the answers of TCP probes and ssh, so StatusCheck's decisions can be checked."""

    def __init__(self, monkeypatch, candidates, open_addresses, ssh=(0, "", "")):
        self.probed = []
        self.ssh_argv = None
        self.ssh = ssh
        self.open_addresses = open_addresses
        monkeypatch.setattr(_status.Discovery, "candidates", lambda discovery: iter(candidates))
        monkeypatch.setattr(_status, "tcp_probe", self.tcp_probe)
        monkeypatch.setattr(_status, "run_with_deadline", self.run_with_deadline)

    def tcp_probe(self, address, port, timeout):
        self.probed.append(address)
        return None if address in self.open_addresses else "TCP port %d refused the connection" % port

    def run_with_deadline(self, argv, timeout, **options):
        self.ssh_argv = argv
        if self.ssh is None:
            raise CommandTimeout(argv, timeout)
        return self.ssh


MAC = "52:54:00:12:34:56"


def test_first_answering_candidate_is_asked(monkeypatch):
    host = FakeHost(monkeypatch, [Candidate("10.0.0.9", "neighbor"), Candidate("10.0.0.5", "arp_sweep")], {"10.0.0.5"},
                    ssh=(0, remote_output(NIXOS, SYSTEM), ""))
    result = _status.StatusCheck(MAC, expected_system=SYSTEM).run()
    assert host.probed == ["10.0.0.9", "10.0.0.5"]
    assert result["state"] == "installed" and result["ip"] == "10.0.0.5" and result["ip_source"] == "arp_sweep"
    assert result["current_system"] == SYSTEM and result["os_release"]["ID"] == "nixos" and result["changed"] is False
    assert result["unreachable_cause"] is None
    assert result["msg"] == "10.0.0.5 is installed: /run/current-system is the expected system %s" % SYSTEM
    # Unpinned: a known_hosts file of this check alone, gone afterwards.
    known_hosts = [a for a in host.ssh_argv if a.startswith("UserKnownHostsFile=")][0]
    assert "nixie-status-" in known_hosts and "StrictHostKeyChecking=accept-new" in host.ssh_argv


def test_unreachable_names_each_address_tried(monkeypatch):
    FakeHost(monkeypatch, [Candidate("10.0.0.9", "neighbor"), Candidate("fe80::1%nixie0", "link_local")], set())
    result = _status.StatusCheck(MAC).run()
    assert result["state"] == "unreachable" and result["ip"] == "10.0.0.9" and result["ip_source"] == "neighbor"
    assert result["unreachable_cause"] == "no_answer"
    assert result["reason"] == ("no address answered: 10.0.0.9 (neighbor): TCP port 22 refused the connection; "
                                "fe80::1%nixie0 (link_local): TCP port 22 refused the connection")


def test_unreachable_without_any_address():
    result = _status.StatusCheck(MAC, discovery=["static", "agent"]).run()
    assert result["state"] == "unreachable" and result["ip"] is None and result["ip_source"] is None
    assert result["unreachable_cause"] == "no_address"
    assert result["reason"].startswith("no address found for %s: static: no ip given; agent: no boot server to ask" % MAC)
    assert result["action"] == "netboot"


def test_ssh_failure_is_unreachable_with_ssh_reason(monkeypatch, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    host = FakeHost(monkeypatch, [Candidate("10.0.0.5", "static")], {"10.0.0.5"}, ssh=(255, "", CHANGED_KEY))
    result = _status.StatusCheck(MAC, ip="10.0.0.5", known_hosts=str(known_hosts)).run()
    assert result["state"] == "unreachable" and result["ip"] == "10.0.0.5"
    assert "host key" in result["reason"] and str(known_hosts) in result["reason"] and result["unreachable_cause"] == "host_key"
    assert "StrictHostKeyChecking=yes" in host.ssh_argv and 'UserKnownHostsFile="%s"' % known_hosts in host.ssh_argv


def test_ssh_past_the_deadline_is_unreachable_by_timeout(monkeypatch):
    FakeHost(monkeypatch, [Candidate("10.0.0.5", "static")], {"10.0.0.5"}, ssh=None)
    result = _status.StatusCheck(MAC, ip="10.0.0.5").run()
    assert result["state"] == "unreachable" and result["unreachable_cause"] == "timeout"
    assert result["reason"] == "SSH to root@10.0.0.5 did not finish within the timeout"


def test_cut_short_output_is_unreachable(monkeypatch):
    cut_short = "@@nixie-status os-release\nID=nixos\n"
    FakeHost(monkeypatch, [Candidate("10.0.0.5", "static")], {"10.0.0.5"}, ssh=(1, cut_short, "sh: not found"))
    result = _status.StatusCheck(MAC, ip="10.0.0.5").run()
    assert result["state"] == "unreachable" and result["unreachable_cause"] == "ssh_failed"
    assert "cut short" in result["reason"] and "sh: not found" in result["reason"]


def test_flake_is_evaluated_only_for_an_installed_looking_nixos(monkeypatch):
    evaluated = []

    def toplevel_paths(nix, flake, hosts):
        evaluated.append((flake, hosts))
        return {hosts[0]: OTHER_SYSTEM}

    monkeypatch.setattr(_status._nix, "toplevel_paths", toplevel_paths)
    monkeypatch.setattr(_status._nix, "Nix", lambda timeout: "nix")
    FakeHost(monkeypatch, [Candidate("10.0.0.5", "static")], {"10.0.0.5"}, ssh=(0, remote_output(NIXOS_INSTALLER), ""))
    installer = _status.StatusCheck(MAC, ip="10.0.0.5", flake="/srv/infra", flake_attr="nixie-01").run()
    assert installer["state"] == "installer" and installer["expected_system"] is None and evaluated == []

    FakeHost(monkeypatch, [Candidate("10.0.0.5", "static")], {"10.0.0.5"}, ssh=(0, remote_output(NIXOS, SYSTEM), ""))
    outdated = _status.StatusCheck(MAC, ip="10.0.0.5", flake="/srv/infra", flake_attr="nixie-01").run()
    assert outdated["state"] == "outdated" and outdated["expected_system"] == OTHER_SYSTEM
    assert evaluated == [("/srv/infra", ["nixie-01"])]


@pytest.mark.parametrize("state, cause, awaiting, reinstall, action", [
    ("installed", None, False, True, "skip"),
    ("installer", None, False, False, "netboot"),
    ("outdated", None, False, False, "skip"),
    ("other_os", None, False, True, "netboot"),
    ("unreachable", "no_address", False, False, "netboot"),
    ("unreachable", "no_answer", False, False, "netboot"),
    ("unreachable", "login_refused", False, False, "skip"),
    ("unreachable", "login_refused", True, False, "netboot"),
    ("unreachable", "host_key", True, True, "skip"),
    ("unreachable", "timeout", False, True, "skip"),
    ("unreachable", "ssh_failed", False, False, "skip"),
])
def test_decide_netboots_only_what_is_safe_to_install(state, cause, awaiting, reinstall, action):
    decided, why = _status.decide(state, cause, awaiting, reinstall)
    assert decided == action and why


@pytest.mark.parametrize("state, cause, reinstall, power_state, action, words", [
    ("installed", None, True, "on", "netboot", "its BMC power-cycles it"),
    ("installed", None, False, "on", "skip", "it is installed"),
    ("outdated", None, False, "on", "skip", "set nixie_reinstall=true to reinstall"),
    ("unreachable", "no_answer", False, "off", "netboot", "its BMC reports it powered off"),
    ("unreachable", "no_answer", False, "on", "netboot", "nothing answers"),
    ("unreachable", "host_key", True, "on", "skip", "left alone"),
])
def test_decide_with_a_bmc(state, cause, reinstall, power_state, action, words):
    decided, why = _status.decide(state, cause, False, reinstall, bmc=True, power_state=power_state)
    assert decided == action and words in why, why
