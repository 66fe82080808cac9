"""nixie.provision.install run as an Ansible module in the lab's controller namespace against a real SSH server
(dropbear) in a client namespace, with a recording stand-in for nixos-anywhere on PATH: data safety, host key
check, the exact command line, logs, failures and the deadline. The install and failure cases also run as the module
process alone, as on a controller that is not this machine."""

import json
import os
import stat
import subprocess
import time

import pytest
from dhcp_packets import hear_lease
from nixielab.ansiblerun import run_module, run_module_process
from nixielab.net import LabNetwork

from ansible_collections.nixie.provision.plugins.module_utils._install import pin_host_keys, pinning_ssh

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

TARGET = "10.213.0.77"
MAC = "52:54:00:77:00:01"
BLANK_DISK = {"name": "vda", "size_bytes": 2 * 2 ** 30, "model": "QEMU HARDDISK", "has_partitions": False, "has_filesystem": False}
# Records its argv and environment-chosen behaviour; the product never knows it is not nixos-anywhere.
STAND_IN = """#!/bin/sh
printf '%s\\n' "$@" > "$NIXIE_TEST_RECORD"
echo "stand-in: installing"
echo "### Formatting hard drive with disko ###"
case "$NIXIE_TEST_MODE" in
  fail) echo "stand-in: disko failed: no space left" >&2; exit 3 ;;
  hang) sleep 300 & echo $! > "$NIXIE_TEST_RECORD.child"; wait ;;
esac
# Apart in time, as nixos-anywhere's phases are: the module reads the log while the install runs.
sleep 1
echo "### Installing NixOS ###"
sleep 1
echo "### Rebooting ###"
echo "stand-in: done"
"""


@pytest.fixture(scope="module")
def net():
    with LabNetwork(site_dhcp=False) as lab:
        yield lab


@pytest.fixture(scope="module")
def target(net, tmp_path_factory):
    """A client namespace on the lab bridge running dropbear: an installer's SSH server."""
    directory = tmp_path_factory.mktemp("target")
    client = net.add_client("inst", MAC)
    client.run(["ip", "addr", "add", TARGET + "/24", "dev", "eth0"], check=True)
    host_key = directory / "dropbear_ed25519_host_key"
    subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(host_key)], check=True, capture_output=True)
    public = subprocess.run(["dropbearkey", "-y", "-f", str(host_key)], check=True, capture_output=True, text=True).stdout
    public_line = next(line for line in public.splitlines() if line.startswith("ssh-"))
    client.popen(["dropbear", "-F", "-E", "-s", "-r", str(host_key), "-p", "22"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for dummy in range(50):
        if net.run_ctl(["ssh-keyscan", "-T", "1", TARGET], capture_output=True, text=True).stdout.strip():
            break
        time.sleep(0.1)
    return public_line


# In Ansible's own process (the action plugin, for a controller that is this machine), or as the module process.
RUNNERS = pytest.mark.parametrize("run", [run_module, run_module_process], ids=["action", "module"])


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nixos-anywhere"
    script.write_text(STAND_IN)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "argv"
    monkeypatch.setenv("PATH", "%s:%s" % (bin_dir, os.environ["PATH"]))
    monkeypatch.setenv("NIXIE_TEST_RECORD", str(record))
    return record


def install_args(tmp_path, host_keys, disks=(BLANK_DISK,), **extra):
    args = {"name": "nixie-01", "flake": "/srv/fleet", "target": TARGET, "ssh_private_key": "/root/.ssh/deployer",
            "agent_report": {"ssh_host_keys": list(host_keys), "disks": list(disks)}, "run_dir": str(tmp_path / "run")}
    args.update(extra)
    return args


@RUNNERS
def test_installs_with_the_exact_command_and_a_stable_injected_host_key(net, target, stand_in, tmp_path, run):
    result = run("nixie.provision.install", install_args(tmp_path, [target], extra_args=["--build-on", "remote"]), netns=net.ctl_ns)
    assert not result["failed"], result
    extra_files = str(tmp_path / "run" / "nixie-01" / "extra-files")
    expected = ["--flake", "/srv/fleet#nixie-01", "--target-host", "root@nixie-01", "--ssh-option", "HostName=" + TARGET, "-i", "/root/.ssh/deployer",
                "--phases", "disko,install,reboot", "--extra-files", extra_files, "--no-substitute-on-destination", "--build-on", "remote"]
    assert stand_in.read_text().splitlines() == expected
    assert result["command"][1:] == expected
    log = (tmp_path / "run" / "nixie-01" / "install.log").read_text()
    assert "stand-in: installing" in log and "stand-in: done" in log
    key_file = tmp_path / "run" / "nixie-01" / "extra-files" / "etc" / "ssh" / "ssh_host_ed25519_key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert result["host_key"] == (key_file.parent / "ssh_host_ed25519_key.pub").read_text().strip()
    again = run("nixie.provision.install", install_args(tmp_path, [target], substitute_on_destination=True), netns=net.ctl_ns)
    assert again["host_key"] == result["host_key"], "a rerun must keep the key already handed out"
    assert "--no-substitute-on-destination" not in stand_in.read_text().splitlines()


def test_built_store_paths_replace_the_flake(net, target, stand_in, tmp_path):
    disko, toplevel = "/nix/store/mnb4aaaa-disko-format", "/nix/store/q1n2aaaa-nixos-system-nixie-01"
    result = run_module("nixie.provision.install", install_args(tmp_path, [target], toplevel=toplevel, disko_script=disko,
                                                                disk_devices={"main": "/dev/vda"}), netns=net.ctl_ns)
    assert not result["failed"], result
    extra_files = str(tmp_path / "run" / "nixie-01" / "extra-files")
    assert stand_in.read_text().splitlines() == [
        "--store-paths", disko, toplevel, "--target-host", "root@nixie-01", "--ssh-option", "HostName=" + TARGET, "-i", "/root/.ssh/deployer",
        "--phases", "disko,install,reboot", "--extra-files", extra_files, "--no-substitute-on-destination"]
    without_flake = install_args(tmp_path, [target], toplevel=toplevel, disko_script=disko)
    del without_flake["flake"]
    assert not run_module("nixie.provision.install", without_flake, netns=net.ctl_ns)["failed"]


def test_a_host_with_nixos_facter_is_installed_from_the_flake_with_its_report_path(net, target, stand_in, tmp_path):
    built = {"toplevel": "/nix/store/q1n2aaaa-nixos-system-nixie-01", "disko_script": "/nix/store/mnb4aaaa-disko-format"}
    result = run_module("nixie.provision.install", install_args(tmp_path, [target], generate_hardware_config="nixos-facter", **built),
                        netns=net.ctl_ns)
    assert not result["failed"], result
    host_dir = tmp_path / "run" / "nixie-01"
    # The configuration reads the report nixos-anywhere writes first: the flake, not the built store paths.
    assert stand_in.read_text().splitlines() == [
        "--flake", "/srv/fleet#nixie-01", "--generate-hardware-config", "nixos-facter", str(host_dir / "facter.json"),
        "--target-host", "root@nixie-01", "--ssh-option", "HostName=" + TARGET, "-i", "/root/.ssh/deployer",
        "--phases", "disko,install,reboot", "--extra-files", str(host_dir / "extra-files"), "--no-substitute-on-destination"]
    elsewhere = run_module("nixie.provision.install", install_args(tmp_path, [target], generate_hardware_config="nixos-facter",
                                                                   hardware_config_path="/srv/fleet/hosts/nixie-01/facter.json"), netns=net.ctl_ns)
    assert elsewhere["command"][3:6] == ["--generate-hardware-config", "nixos-facter", "/srv/fleet/hosts/nixie-01/facter.json"], elsewhere


@pytest.mark.parametrize("change, message", [
    ({"generate_hardware_config": "facter"}, "nixie-01: generate_hardware_config must be one of nixos-facter, not 'facter'"),
    ({"generate_hardware_config": "nixos-generate-config"}, "nixie-01: generate_hardware_config must be one of nixos-facter"),
    ({"generate_hardware_config": "nixos-facter", "flake": None, "toplevel": "/nix/store/q1n2aaaa-nixos-system-nixie-01",
      "disko_script": "/nix/store/mnb4aaaa-disko-format"}, "nixie-01: flake: needed with generate_hardware_config"),
])
def test_a_bad_hardware_config_request_fails_naming_host_and_field(net, target, stand_in, tmp_path, change, message):
    args = {key: value for key, value in dict(install_args(tmp_path, [target]), **change).items() if value is not None}
    result = run_module("nixie.provision.install", args, netns=net.ctl_ns)
    assert result["failed"] and message in result["msg"], result
    assert not stand_in.exists()


@pytest.mark.parametrize("change, message", [
    ({"toplevel": "/nix/store/q1n2aaaa-nixos-system-nixie-01"}, "parameters are required together: toplevel, disko_script"),
    ({"flake": None}, "one of the following is required: flake, toplevel"),
])
def test_store_paths_come_in_pairs_or_a_flake_is_needed(net, target, stand_in, tmp_path, change, message):
    args = {key: value for key, value in dict(install_args(tmp_path, [target]), **change).items() if value is not None}
    result = run_module("nixie.provision.install", args, netns=net.ctl_ns)
    assert result["failed"] and message in result["msg"], result
    assert not stand_in.exists()


DATA_DISK = {"name": "vdb", "size_bytes": 2 ** 30, "model": "", "has_partitions": True, "has_filesystem": True,
             "by_id": ["virtio-nixie-data"], "by_path": ["pci-0000:00:05.0"]}


@pytest.mark.parametrize("layout", [{"main": "/dev/vda"}, {"main": "/dev/disk/by-id/virtio-nixie-system"}, {"main": "/dev/disk/by-path/pci-0000:00:04.0"}])
def test_a_disk_the_layout_does_not_name_may_hold_data(net, target, stand_in, tmp_path, layout):
    system = dict(BLANK_DISK, by_id=["virtio-nixie-system"], by_path=["pci-0000:00:04.0"])
    args = install_args(tmp_path, [target], disks=[system, DATA_DISK], disk_devices=layout)
    result = run_module("nixie.provision.install", args, netns=net.ctl_ns)
    assert not result["failed"] and stand_in.exists(), result


@pytest.mark.parametrize("layout, words", [
    ({"main": "/dev/nvme0n1"}, "its disk layout wants /dev/nvme0n1 (disko.devices.disk.main); this machine has vda (2.0 GiB, QEMU HARDDISK), "
                               "vdb (by-id virtio-nixie-data, 1.0 GiB, unknown model); nothing was written"),
    ({"main": "/dev/vda", "data": "/dev/disk/by-id/virtio-nixie-data"},
     "vdb (by-id virtio-nixie-data, 1.0 GiB, unknown model) holds partitions and a filesystem"),
])
def test_a_layout_naming_a_missing_or_filled_disk_is_refused_before_anything_runs(net, target, stand_in, tmp_path, layout, words):
    args = install_args(tmp_path, [target], disks=[BLANK_DISK, DATA_DISK], disk_devices=layout)
    result = run_module("nixie.provision.install", args, netns=net.ctl_ns)
    assert result["failed"] and "refusing to install nixie-01: " + words in result["msg"], result
    assert not stand_in.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("disk, words", [
    (dict(BLANK_DISK, has_partitions=True), "vda (2.0 GiB, QEMU HARDDISK) holds partitions"),
    (dict(BLANK_DISK, has_filesystem=True), "vda (2.0 GiB, QEMU HARDDISK) holds a filesystem"),
])
def test_disks_with_data_are_refused_before_anything_runs(net, target, stand_in, tmp_path, disk, words):
    result = run_module("nixie.provision.install", install_args(tmp_path, [target], disks=[disk]), netns=net.ctl_ns)
    assert result["failed"] and "refusing to install nixie-01: " + words in result["msg"], result
    assert "disks_may_be_wiped" in result["msg"]
    assert not stand_in.exists()
    allowed = run_module("nixie.provision.install", install_args(tmp_path, [target], disks=[disk], disks_may_be_wiped=True), netns=net.ctl_ns)
    assert not allowed["failed"] and stand_in.exists(), allowed


def test_no_disk_is_refused(net, target, stand_in, tmp_path):
    result = run_module("nixie.provision.install", install_args(tmp_path, [target], disks=[]), netns=net.ctl_ns)
    assert result["failed"] and "reported no disk" in result["msg"]
    assert not stand_in.exists()


@pytest.mark.parametrize("change, message", [
    ({"disks": [{"name": "vda", "size_bytes": 2 * 2 ** 30, "has_partitions": False}]},
     "refusing to install nixie-01: vda (2.0 GiB, unknown model) is not known to be blank"),
    ({"disks": [dict(BLANK_DISK, has_filesystem=None)]}, "vda (2.0 GiB, QEMU HARDDISK) is not known to be blank"),
    ({"disks": "sda"}, "its agent report's disks must be a list of objects, got 'sda'"),
    ({"disks": ["sda"]}, "its agent report's disks must be a list of objects"),
    ({"ssh_host_keys": "ssh-ed25519 AAAA"}, "reported its SSH host keys as one string"),
    ({"name": "../../etc"}, "name: host name '../../etc' must be"),
    ({"timeout": 0}, "timeout: must be at least 1 second, got 0"),
    ({"run_dir": "/proc/nixie/run"}, "run_dir: cannot create /proc/nixie/run/nixie-01"),
])
def test_malformed_reports_and_options_are_refused_before_anything_runs(net, target, stand_in, tmp_path, change, message):
    args = install_args(tmp_path, [target])
    for key in ("disks", "ssh_host_keys"):
        if key in change:
            args["agent_report"][key] = change.pop(key)
    result = run_module("nixie.provision.install", dict(args, **change), netns=net.ctl_ns)
    assert result["failed"] and message in result["msg"], result
    assert "Traceback" not in result.get("module_stderr", "")
    assert not stand_in.exists() and not (tmp_path / "etc").exists()


# Connects as nixos-anywhere does: its own options first, host key checking off, then each --ssh-option; records the ssh
# it found and what ssh said (no key of the test is authorized: "Permission denied" means the host key was accepted).
CONNECTING_STAND_IN = """#!/bin/sh
options="-o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o BatchMode=yes -o ConnectTimeout=5"
while [ $# -gt 0 ]; do
  case $1 in
    --ssh-option) options="$options -o $2"; shift 2 ;;
    --target-host) target=$2; shift 2 ;;
    *) shift ;;
  esac
done
command -v ssh > "$NIXIE_TEST_RECORD"
ssh $options "$target" true 2>> "$NIXIE_TEST_RECORD" || true
"""


def _link_local(net):
    """The target's scoped link-local address as the controller reaches it (fe80::...%<controller's interface>)."""
    client = next(client for client in net.clients if client.name == "inst")
    for dummy in range(50):
        shown = client.run(["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"], capture_output=True, text=True).stdout
        if shown and "tentative" not in shown:
            return "%s%%%s" % (shown.split()[3].split("/")[0], net.ctl_if)
        time.sleep(0.1)
    raise AssertionError("the target has no link-local address")


@pytest.mark.parametrize("scoped", [False, True], ids=["ipv4", "scoped-link-local"])
def test_nixos_anywhere_reaches_the_alias_through_the_pinning_ssh(net, target, stand_in, tmp_path, scoped):
    stand_in.parent.joinpath("bin", "nixos-anywhere").write_text(CONNECTING_STAND_IN)
    address = _link_local(net) if scoped else TARGET
    result = run_module("nixie.provision.install", install_args(tmp_path, [target], target=address), netns=net.ctl_ns)
    assert not result["failed"], result
    # ssh expands %-tokens in HostName: a zone's % goes doubled.
    assert result["command"][3:7] == ["--target-host", "root@nixie-01", "--ssh-option", "HostName=" + address.replace("%", "%%")]
    host_dir = tmp_path / "run" / "nixie-01"
    ssh, said = stand_in.read_text().split("\n", 1)
    assert ssh == str(host_dir / "installer-ssh" / "ssh")
    assert "Permission denied" in said and "verification failed" not in said, said
    assert (host_dir / "installer_known_hosts").read_text() == "nixie-01 %s\n" % target


def test_the_pinning_ssh_refuses_another_key_though_nixos_anywhere_turns_checking_off(net, target, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    for keys, refused in (([(tmp_path / "other.pub").read_text().strip()], True), ([target], False)):
        known_hosts = pin_host_keys(str(tmp_path / "known_hosts"), "nixie-01", keys)
        ssh = os.path.join(pinning_ssh(str(tmp_path / "ssh"), "nixie-01", known_hosts), "ssh")
        said = net.run_ctl([ssh, "-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes", "-o",
                            "HostName=" + TARGET, "root@nixie-01", "true"], capture_output=True, text=True, timeout=30).stderr
        if refused:
            assert "Host key verification failed" in said, said
        else:
            assert "Permission denied" in said and "verification failed" not in said, said


def test_another_host_key_at_the_address_is_refused(net, target, stand_in, tmp_path):
    impostor = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq3Ae8ciXvwSBoPHmIZVbHJU8KeUiJp6oNX8nn7UBsD root@elsewhere"
    result = run_module("nixie.provision.install", install_args(tmp_path, [impostor]), netns=net.ctl_ns)
    assert result["failed"] and "is not the one its agent reported" in result["msg"], result
    assert not stand_in.exists()


@RUNNERS
def test_failure_reports_the_log_and_its_tail(net, target, stand_in, tmp_path, monkeypatch, run):
    monkeypatch.setenv("NIXIE_TEST_MODE", "fail")
    result = run("nixie.provision.install", install_args(tmp_path, [target]), netns=net.ctl_ns)
    log = str(tmp_path / "run" / "nixie-01" / "install.log")
    assert result["failed"] and "nixos-anywhere failed (exit 3); log: %s" % log in result["msg"], result
    assert "disko failed: no space left" in result["msg"]


def test_deadline_stops_the_whole_process_group(net, target, stand_in, tmp_path, monkeypatch):
    monkeypatch.setenv("NIXIE_TEST_MODE", "hang")
    started = time.monotonic()
    result = run_module("nixie.provision.install", install_args(tmp_path, [target], timeout=3), netns=net.ctl_ns)
    assert time.monotonic() - started < 60
    assert result["failed"] and "did not finish within 3 s and was stopped" in result["msg"], result
    child = int((tmp_path / "argv.child").read_text())
    assert not os.path.exists("/proc/%d" % child) or open("/proc/%d/stat" % child, encoding="ascii").read().split(")")[-1].split()[0] == "Z"


def test_check_mode_writes_and_runs_nothing(net, target, stand_in, tmp_path):
    result = run_module("nixie.provision.install", install_args(tmp_path, [target]), netns=net.ctl_ns, check=True)
    assert result["changed"] and not result["failed"], result
    assert json.dumps(result["command"]).count("nixos-anywhere") == 1
    assert not stand_in.exists() and not (tmp_path / "run").exists()


def test_the_running_boot_server_boots_the_host_from_disk_unless_the_install_fails(net, target, stand_in, tmp_path, monkeypatch):
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel" * 100)
    run_dir = str(tmp_path / "run")
    server = run_module("nixie.provision.server", {
        "run_dir": run_dir, "interface": net.ctl_if, "kernel": str(kernel), "initrd": str(kernel), "cmdline": "init=/x/init",
        "authorized_key": target, "hosts": [{"name": "nixie-01", "mac": MAC}]}, netns=net.ctl_ns)
    assert not server["failed"], server
    script_url = "%s/boot/%s.ipxe" % (server["http_url"], MAC.replace(":", "-"))
    try:
        installed = run_module("nixie.provision.install", install_args(tmp_path, [target], mac=MAC.upper()), netns=net.ctl_ns)
        assert not installed["failed"] and installed["boot_server_told"] is True, installed
        status, script = net.curl_ctl(script_url)
        assert status == 200 and "sanboot --no-describe --drive 0 ||" in script.splitlines() and "kernel " not in script, script

        monkeypatch.setenv("NIXIE_TEST_MODE", "fail")
        failed = run_module("nixie.provision.install", install_args(tmp_path, [target], mac=MAC), netns=net.ctl_ns)
        assert failed["failed"] and "nixos-anywhere failed (exit 3)" in failed["msg"], failed
        # As the machine would: its DHCP exchange first (the controller's namespace plays it), then its script.
        hear_lease(net.run_ctl, net.ctl_if, MAC, "10.213.0.1")
        status, script = net.curl_ctl(script_url)
        assert status == 200 and "kernel " in script, "a failed install must netboot the installer again: %s" % script
    finally:
        run_module("nixie.provision.server", {"run_dir": run_dir, "state": "stopped"}, netns=net.ctl_ns)
    with open(os.path.join(run_dir, "events.jsonl"), encoding="utf-8") as handle:
        events = [event for event in map(json.loads, handle) if event["step"].startswith("marked") or event["step"] == "install"]
    # The status page's view of both installs: each phase nixos-anywhere announced, then how it ended.
    assert [(event["step"], event.get("phase")) for event in events] == [
        ("marked_installed", None), ("install", "started"), ("install", "disko"), ("install", "install"), ("install", "reboot"),
        ("install", "done"), ("marked_installed", None), ("install", "started"), ("install", "disko"), ("install", "failed"),
        ("marked_not_installed", None)]
    assert "nixos-anywhere failed (exit 3)" in events[-2]["error"] and "no space left" in events[-2]["error"]

    without_server = run_module("nixie.provision.install", install_args(tmp_path, [target], mac=MAC), netns=net.ctl_ns)
    assert without_server["failed"] and "boot server" not in without_server["msg"], without_server
    monkeypatch.delenv("NIXIE_TEST_MODE")
    alone = run_module("nixie.provision.install", install_args(tmp_path, [target], mac=MAC), netns=net.ctl_ns)
    assert not alone["failed"] and alone["boot_server_told"] is False, alone
