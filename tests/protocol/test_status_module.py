"""nixie.provision.status run as an Ansible module in the lab's controller namespace against client namespaces
running dropbear: address discovery (ARP sweep, IPv6 neighbours, static, agent report), classification from a
fake os-release and /run/current-system, and the unreachable cases, all bounded in time.

Each SSH server runs in a private mount namespace of its client, where a temporary directory is bind-mounted
over /root (the authorized key) and fixture files over /etc/os-release and /proc/cmdline, and /run and
/var/log are fresh tmpfs mounts: nothing of the real system is read or written by the test's logins.
"""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nixielab.ansiblerun import run_module
from nixielab.net import LabNetwork

from ansible_collections.nixie.provision.plugins.module_utils import _nix
from ansible_collections.nixie.provision.plugins.module_utils._discover import eui64_link_local

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

MAC = "52:54:00:5a:00:01"
MAC_V6_ONLY = "52:54:00:5a:00:02"
MAC_ABSENT = "52:54:00:5a:00:ff"
ADDRESS = "10.213.0.77"
SYSTEM = "/nix/store/8x0k7sbhhkhbnzxlvmh83dhxg5dpvw8n-nixos-system-nixie-01-24.11.20241201.af51545"
OTHER_SYSTEM = "/nix/store/1b9p07z77phvv2hf6gm9f28syp5xfk5i-nixos-system-nixie-01-24.11.20241130.0000000"
BMC_PASSWORD = "lab-BMC-s3cret"
BMC_PORT = 6230
SUPPORT = Path(__file__).resolve().parents[1] / "support"
NIXOS = 'NAME=NixOS\nID=nixos\nVERSION_ID="24.11"\nPRETTY_NAME="NixOS 24.11 (Vicuna)"\nVARIANT_ID=""\n'
NIXOS_INSTALLER = NIXOS.replace('VARIANT_ID=""', "VARIANT_ID=installer")
DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
NIXIE_CMDLINE = "init=/nix/store/x-nixos-system-installer/init nixie.api=http://10.213.0.1:8080/api/v1 nixie.token=secret-token\n"

# What ansible's start-up and the module's imports (scapy) may add to the module's own timeout.
SLACK = 15

FLAKE_FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "flake-installer", "prepare.py")


@pytest.fixture(scope="module")
def lab():
    with LabNetwork(site_dhcp=False) as network:
        host = network.add_client("h1", MAC)
        subprocess.run(["ip", "-n", host.netns, "addr", "add", "%s/24" % ADDRESS, "dev", host.iface], check=True)
        # This one has IPv6 link-local only: found through the all-nodes echo and the neighbour table.
        network.add_client("h2", MAC_V6_ONLY)
        yield network


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The deployer's key pair, the host key, and a known_hosts file pinning it for ADDRESS."""
    directory = tmp_path_factory.mktemp("keys")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deployer@test", "-f", str(directory / "id")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stranger@test", "-f", str(directory / "stranger")], check=True)
    subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(directory / "hostkey")], check=True, capture_output=True)
    host_public = subprocess.run(["dropbearkey", "-y", "-f", str(directory / "hostkey")], check=True, capture_output=True, text=True).stdout
    host_key = [line for line in host_public.splitlines() if line.startswith("ssh-ed25519 ")][0]
    (directory / "hostkey.pub").write_text(host_key + "\n")
    (directory / "known_hosts").write_text("%s %s\n" % (ADDRESS, " ".join(host_key.split()[:2])))
    subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(directory / "otherkey")], check=True, capture_output=True)
    other_public = subprocess.run(["dropbearkey", "-y", "-f", str(directory / "otherkey")], check=True, capture_output=True, text=True).stdout
    other_key = [line for line in other_public.splitlines() if line.startswith("ssh-ed25519 ")][0]
    (directory / "wrong_known_hosts").write_text("%s %s\n" % (ADDRESS, " ".join(other_key.split()[:2])))
    return directory


class SshServer:
    """dropbear in a client namespace, seeing fixture files through its own mount namespace."""

    def __init__(self, client, keys, directory, os_release, current_system=None, nixie_boot=False):
        self.client = client
        self.reboots = directory / "reboots"
        home = directory / "root"
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        (home / ".ssh" / "authorized_keys").write_text((keys / "id.pub").read_text())
        (home / ".ssh" / "authorized_keys").chmod(0o600)
        (directory / "os-release").write_text(os_release)
        (directory / "cmdline").write_text(NIXIE_CMDLINE)
        steps = [
            "set -e",
            "mount --bind %s /root" % shlex.quote(str(home)),
            "mount --bind %s /etc/os-release" % shlex.quote(str(directory / "os-release")),
            # Private tmpfs mounts: the symlink, dropbear's pid file and login records stay in this namespace.
            "mount -t tmpfs tmpfs /run",
            "mount -t tmpfs tmpfs /var/log",
            # A recording stand-in for reboot, first on dropbear's PATH: the test must not reboot this machine.
            "mount -t tmpfs tmpfs /usr/local/bin",
            "printf '#!/bin/sh\\necho \"$*\" >> %s\\n' > /usr/local/bin/reboot" % shlex.quote(str(directory / "reboots")),
            "chmod +x /usr/local/bin/reboot",
        ]
        if current_system:
            steps.append("ln -s %s /run/current-system" % shlex.quote(current_system))
        if nixie_boot:
            steps.append("mount --bind %s /proc/cmdline" % shlex.quote(str(directory / "cmdline")))
        steps.append("exec dropbear -F -E -s -r %s -p 22 -P /run/dropbear.pid" % shlex.quote(str(keys / "hostkey")))
        self.log = open(directory / "dropbear.log", "wb")  # pylint: disable=consider-using-with  # closed in stop()
        self.process = client.popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", "; ".join(steps)],
                                    stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def _wait_listening(self):
        for dummy in range(100):
            shown = self.client.run(["ss", "-Hltn", "sport = :22"], capture_output=True, text=True).stdout
            if shown.strip():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("dropbear did not start in %s" % self.client.netns)

    def stop(self):
        self.client.tracker.stop(self.process)
        self.log.close()


@pytest.fixture
def ssh_server(lab, keys, tmp_path):
    started = []

    def start(os_release, current_system=None, nixie_boot=False, client="h1"):
        directory = tmp_path / ("server%d" % len(started))
        directory.mkdir()
        target = [c for c in lab.clients if c.name == client][0]
        server = SshServer(target, keys, directory, os_release, current_system, nixie_boot)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def controller_home(tmp_path_factory):
    """An /etc/passwd giving root another home while the module runs.

    The ssh client creates ~/.ssh, found through the password database (not $HOME), on its first connection;
    /root itself cannot be covered, as the virtualenv's Python may live under it.
    """
    directory = tmp_path_factory.mktemp("controller-root")
    lines = []
    with open("/etc/passwd", encoding="utf-8") as passwd:
        for line in passwd:
            fields = line.rstrip("\n").split(":")
            if fields[0] == "root":
                fields[5] = str(directory)
            lines.append(":".join(fields))
    (directory / "passwd").write_text("\n".join(lines) + "\n")
    return directory


def status(lab, keys, home, check=False, **args):
    args.setdefault("ssh_private_key", str(keys / "id"))
    args.setdefault("interface", lab.ctl_if)
    private_root = ("unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount --bind "$0" /etc/passwd && exec "$@"',
                    str(home / "passwd"))
    started = time.monotonic()
    result = run_module("nixie.provision.status", args, netns=lab.ctl_ns, check=check, wrapper=private_root,
                        timeout=args.get("timeout", 30) + 60)
    result["wall_time"] = time.monotonic() - started
    return result


def test_arp_sweep_finds_the_host_and_it_is_installed(lab, keys, controller_home, ssh_server):
    ssh_server(NIXOS, SYSTEM)
    result = status(lab, keys, controller_home, mac=MAC.upper(), expected_system=SYSTEM, known_hosts=str(keys / "known_hosts"))
    assert not result["failed"], result
    assert result["ip"] == ADDRESS and result["ip_source"] == "arp_sweep", result
    assert result["state"] == "installed" and result["changed"] is False
    assert result["current_system"] == SYSTEM and result["expected_system"] == SYSTEM
    assert result["os_release"] == {"NAME": "NixOS", "ID": "nixos", "VERSION_ID": "24.11", "PRETTY_NAME": "NixOS 24.11 (Vicuna)", "VARIANT_ID": ""}


def test_static_address_and_another_system_is_outdated(lab, keys, controller_home, ssh_server):
    ssh_server(NIXOS, OTHER_SYSTEM)
    result = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, expected_system=SYSTEM)
    assert result["ip"] == ADDRESS and result["ip_source"] == "static", result
    assert result["state"] == "outdated" and OTHER_SYSTEM in result["reason"] and SYSTEM in result["reason"]


def test_without_expected_system_nixos_is_installed_but_not_compared(lab, keys, controller_home, ssh_server):
    ssh_server(NIXOS, OTHER_SYSTEM)
    result = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS)
    assert result["state"] == "installed" and result["expected_system"] is None, result
    assert "not compared" in result["msg"]


@pytest.mark.parametrize("os_release, nixie_boot, marker", [
    (NIXOS_INSTALLER, False, "VARIANT_ID=installer"),
    # The lab's busybox installer: no os-release, but the boot server's nixie.api= on the kernel command line.
    ("", True, "nixie.api="),
])
def test_installers(lab, keys, controller_home, ssh_server, os_release, nixie_boot, marker):
    ssh_server(os_release, nixie_boot=nixie_boot)
    result = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, expected_system=SYSTEM)
    assert result["state"] == "installer" and marker in result["reason"], result
    assert "secret-token" not in str(result)


def test_an_installer_is_netbooted_and_rebooted_over_the_key_the_check_saw(lab, keys, controller_home, ssh_server):
    server = ssh_server(NIXOS_INSTALLER)
    checked = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS)
    assert checked["action"] == "netboot" and checked["rebooted"] is False and not server.reboots.exists(), checked
    would = status(lab, keys, controller_home, check=True, mac=MAC, ip=ADDRESS, reboot_installer=True)
    assert would["changed"] and not would["rebooted"] and "check mode" in would["reason"] and not server.reboots.exists(), would
    rebooted = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, reboot_installer=True)
    assert rebooted["changed"] and rebooted["rebooted"] and "rebooted to netboot afresh" in rebooted["reason"], rebooted
    deadline = time.monotonic() + 5
    while not server.reboots.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.reboots.read_text() == "-f\n"


def test_an_installed_system_is_never_rebooted(lab, keys, controller_home, ssh_server):
    server = ssh_server(NIXOS, SYSTEM)
    result = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, expected_system=SYSTEM, reboot_installer=True)
    assert result["state"] == "installed" and result["action"] == "skip" and not result["rebooted"] and not result["changed"], result
    assert not server.reboots.exists()


def test_a_listed_host_is_pinned_and_an_unlisted_one_is_not(lab, keys, controller_home, ssh_server, tmp_path):
    ssh_server(NIXOS, SYSTEM)
    other_key = (keys / "wrong_known_hosts").read_text().split(None, 1)[1]
    listed = tmp_path / "known_hosts"
    listed.write_text("nixie-01 %s" % other_key)
    pinned = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, expected_system=SYSTEM, known_hosts=str(listed),
                    known_hosts_pin="if_listed", host_key_alias="nixie-01")
    assert pinned["unreachable_cause"] == "host_key" and pinned["action"] == "skip", pinned
    unlisted = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, expected_system=SYSTEM, known_hosts=str(listed),
                      known_hosts_pin="if_listed", host_key_alias="nixie-02")
    assert unlisted["state"] == "installed", unlisted
    missing = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, expected_system=SYSTEM, known_hosts=str(tmp_path / "none"),
                     known_hosts_pin="if_listed", host_key_alias="nixie-01")
    assert missing["state"] == "installed" and not missing["failed"], missing


def test_other_os_is_reinstalled_only_when_asked(lab, keys, controller_home, ssh_server):
    ssh_server(DEBIAN)
    left = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS)
    assert left["action"] == "skip" and "nixie_reinstall=true" in left["action_reason"], left
    taken = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, reinstall=True)
    assert taken["action"] == "netboot", taken


def test_other_os_in_check_mode(lab, keys, controller_home, ssh_server):
    ssh_server(DEBIAN)
    result = status(lab, keys, controller_home, check=True, mac=MAC, ip=ADDRESS, expected_system=SYSTEM)
    assert result["state"] == "other_os" and result["changed"] is False, result
    assert result["os_release"]["ID"] == "debian" and result["current_system"] is None
    assert "Debian GNU/Linux 12 (bookworm)" in result["reason"]


def test_agent_report_is_the_last_resort(lab, keys, controller_home, ssh_server, tmp_path):
    ssh_server(NIXOS, SYSTEM)
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel")
    run_dir = str(tmp_path / "run")
    server = run_module("nixie.provision.server", {
        "run_dir": run_dir, "interface": lab.ctl_if, "kernel": str(kernel), "initrd": str(kernel), "cmdline": "init=/x/init",
        "authorized_key": "ssh-ed25519 AAAA deployer", "hosts": [{"name": "nixie-01", "mac": MAC}]}, netns=lab.ctl_ns)
    assert not server["failed"], server
    try:
        before = status(lab, keys, controller_home, mac=MAC, server_url=server["http_url"], discovery=["agent"], timeout=5)
        assert before["state"] == "unreachable" and "no phone-home from %s" % MAC in before["reason"], before
        # The agent's phone-home, as the installer sends it, with the token its script carried.
        code, script = lab.curl_ctl("%s/boot/%s.ipxe" % (server["http_url"], MAC.replace(":", "-")))
        token = re.search(r"nixie\.token=(\S+)", script).group(1)
        report = {"macs": [MAC], "ip": ADDRESS, "ssh_host_keys": [(keys / "hostkey.pub").read_text().strip()], "disks": [],
                  "os_release": {}}
        code, dummy = lab.curl_ctl("-H", "Authorization: Bearer " + token, "-H", "Content-Type: application/json",
                                   "--data", json.dumps(report), server["http_url"] + "/api/v1/phone-home")
        assert code == 200
        result = status(lab, keys, controller_home, mac=MAC, server_url=server["http_url"], discovery=["static", "agent"],
                        expected_system=SYSTEM)
        assert result["ip"] == ADDRESS and result["ip_source"] == "agent" and result["state"] == "installed", result
        # A server on this machine is found from its run directory too.
        local = status(lab, keys, controller_home, mac=MAC, run_dir=run_dir, discovery=["agent"], expected_system=SYSTEM)
        assert local["ip_source"] == "agent" and local["action"] == "skip", local
    finally:
        run_module("nixie.provision.server", {"run_dir": run_dir, "state": "stopped"}, netns=lab.ctl_ns)
    gone = status(lab, keys, controller_home, mac=MAC, server_url=server["http_url"], discovery=["agent"], timeout=5)
    assert gone["state"] == "unreachable" and "did not answer" in gone["reason"] and not gone["failed"], gone


def test_ipv6_link_local_host_is_found_by_its_mac(lab, keys, controller_home, ssh_server):
    ssh_server(NIXOS, SYSTEM, client="h2")
    result = status(lab, keys, controller_home, mac=MAC_V6_ONLY, expected_system=SYSTEM, discovery=["neighbor"])
    # The kernel made the client's link-local address from its MAC the way eui64_link_local computes it.
    assert result["ip"] == "%s%%%s" % (eui64_link_local(MAC_V6_ONLY), lab.ctl_if), result
    assert result["ip_source"] == "neighbor" and result["state"] == "installed"


def test_pinned_host_key_mismatch_is_unreachable(lab, keys, controller_home, ssh_server):
    ssh_server(NIXOS, SYSTEM)
    result = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, expected_system=SYSTEM, known_hosts=str(keys / "wrong_known_hosts"))
    assert result["state"] == "unreachable" and not result["failed"], result
    assert "host key" in result["reason"] and "wrong_known_hosts" in result["reason"] and result["unreachable_cause"] == "host_key"


def test_refused_login_is_unreachable(lab, keys, controller_home, ssh_server):
    ssh_server(NIXOS, SYSTEM)
    result = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, ssh_private_key=str(keys / "stranger"))
    assert result["state"] == "unreachable" and not result["failed"], result
    assert result["reason"].startswith("SSH login to root@%s was refused" % ADDRESS) and "Permission denied" in result["reason"]
    assert result["unreachable_cause"] == "login_refused" and result["awaiting_phone_home"] is False
    assert result["action"] == "skip" and "left alone" in result["action_reason"], "a machine refusing the key is not Nixie's"


def test_refused_login_of_an_installer_a_killed_server_booted_is_netbooted(lab, keys, controller_home, ssh_server):
    ssh_server(NIXOS, SYSTEM)
    awaiting = [MAC.upper(), "52:54:00:00:00:99"]
    result = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, ssh_private_key=str(keys / "stranger"), awaiting_phone_home_macs=awaiting)
    assert result["state"] == "unreachable" and result["unreachable_cause"] == "login_refused", result
    assert result["awaiting_phone_home"] is True and "agent has not phoned home" in result["reason"]
    assert result["action"] == "netboot" and "phones home" in result["action_reason"]
    other = status(lab, keys, controller_home, mac=MAC_V6_ONLY, discovery=["static"], ip=ADDRESS, ssh_private_key=str(keys / "stranger"),
                   awaiting_phone_home_macs=awaiting)
    assert other["awaiting_phone_home"] is False and other["action"] == "skip", other


def test_closed_ssh_port_is_unreachable(lab, keys, controller_home):
    result = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, discovery=["static"], timeout=10)
    assert result["state"] == "unreachable" and result["ip"] == ADDRESS, result
    assert "%s (static): TCP port 22 refused the connection" % ADDRESS in result["reason"] and result["unreachable_cause"] == "no_answer"
    assert result["action"] == "netboot" and "blank machine" in result["action_reason"]


@pytest.mark.parametrize("timeout", [2, 8])
def test_nothing_answers_within_the_timeout(lab, keys, controller_home, timeout):
    result = status(lab, keys, controller_home, mac=MAC_ABSENT, timeout=timeout)
    assert result["state"] == "unreachable" and not result["failed"], result
    assert result["elapsed"] <= timeout + 0.5 and result["wall_time"] < timeout + SLACK
    if timeout == 8:
        # Time enough for every step: the sweep, the table, the IPv6 echo, and a try of the EUI-64 address.
        assert result["ip_source"] == "link_local" and "no answer on TCP port 22" in result["reason"], result


def test_expected_system_evaluated_from_the_flake(lab, keys, controller_home, ssh_server, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("flake_installer_prepare", FLAKE_FIXTURE)
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    try:
        nix = _nix.Nix()
    except _nix.NixNotFound:
        pytest.skip("needs nix")
    for name, value in prepare.offline_nix_env(tmp_path / "nix-conf").items():
        monkeypatch.setenv(name, value)
    flake = prepare.materialise(tmp_path / "flake", b"kernel", b"initrd")
    toplevel = _nix.toplevel_paths(nix, flake, ["nixie-01"])["nixie-01"]
    ssh_server(NIXOS, toplevel)
    installed = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, flake=flake, flake_attr="nixie-01")
    assert installed["state"] == "installed" and installed["expected_system"] == toplevel, installed
    outdated = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, flake=flake, flake_attr="nixie-02")
    assert outdated["state"] == "outdated" and outdated["expected_system"].endswith("-nixos-system-nixie-02"), outdated


def test_configuration_errors_fail_the_task(lab, keys, controller_home, tmp_path):
    bad_mac = status(lab, keys, controller_home, mac="52:54:00", ip=ADDRESS)
    assert bad_mac["failed"] and "not a MAC address" in bad_mac["msg"]
    no_interface = status(lab, keys, controller_home, mac=MAC, interface="nope0")
    assert no_interface["failed"] and "no network interface named 'nope0'" in no_interface["msg"]
    no_key = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, ssh_private_key=str(tmp_path / "missing"))
    assert no_key["failed"] and "ssh_private_key" in no_key["msg"]


@pytest.fixture
def ipmi_bmc(lab, tmp_path):
    """The lab's IPMI BMC (tests/support/ipmi_bmc.py) in the controller namespace, for a machine that is off."""
    state = tmp_path / "bmc-state.json"
    (tmp_path / "bmc-password").write_text(BMC_PASSWORD)
    process = lab.popen_ctl([sys.executable, str(SUPPORT / "ipmi_bmc.py"), "--port", str(BMC_PORT), "--user", "admin",
                             "--password-file", str(tmp_path / "bmc-password"), "--state", str(state)])
    deadline = time.monotonic() + 10
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    yield {"driver": "ipmi", "address": "127.0.0.1", "port": BMC_PORT, "username": "admin"}
    lab.tracker.stop(process)


def test_a_bmc_tells_a_machine_that_is_off_and_decides_its_reinstall(lab, keys, controller_home, ssh_server, ipmi_bmc):
    off = status(lab, keys, controller_home, mac=MAC_ABSENT, discovery=["static"], ip="10.213.0.99", timeout=5,
                 power=ipmi_bmc, power_password=BMC_PASSWORD)
    assert off["power_state"] == "off" and off["boot_override"] is None, off
    assert off["action"] == "netboot" and off["action_reason"] == "its BMC reports it powered off", off
    ssh_server(NIXOS, SYSTEM)
    kept = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, expected_system=SYSTEM, power=ipmi_bmc, power_password=BMC_PASSWORD)
    assert kept["state"] == "installed" and kept["action"] == "skip", kept
    again = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, expected_system=SYSTEM, power=ipmi_bmc, power_password=BMC_PASSWORD,
                   reinstall=True)
    assert again["action"] == "netboot" and "power-cycles it" in again["action_reason"], again
    without_bmc = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, expected_system=SYSTEM, reinstall=True)
    assert without_bmc["action"] == "skip", "Wake-on-LAN cannot power-cycle an installed machine"


def test_a_bmc_that_refuses_the_password_fails_the_check_without_showing_it(lab, keys, controller_home, ipmi_bmc):
    wrong = "not-" + BMC_PASSWORD
    result = status(lab, keys, controller_home, mac=MAC_ABSENT, discovery=["static"], ip="10.213.0.99", timeout=5,
                    power=ipmi_bmc, power_password=wrong)
    assert result["failed"] and "IPMI BMC 127.0.0.1:%d: cannot log in" % BMC_PORT in result["msg"], result
    assert wrong not in json.dumps(result)
    stored = status(lab, keys, controller_home, mac=MAC_ABSENT, discovery=["static"], ip="10.213.0.99", timeout=5,
                    power=dict(ipmi_bmc, password="in-the-inventory"))
    assert stored["failed"] and "power.password: passwords never go into the inventory" in stored["msg"], stored


def test_an_installer_with_a_bmc_is_left_to_it(lab, keys, controller_home, ssh_server, ipmi_bmc):
    server = ssh_server(NIXOS_INSTALLER)
    result = status(lab, keys, controller_home, mac=MAC, ip=ADDRESS, reboot_installer=True, power=ipmi_bmc, power_password=BMC_PASSWORD)
    assert result["action"] == "netboot" and not result["rebooted"] and "its BMC power-cycles it" in result["reason"], result
    assert not server.reboots.exists()
