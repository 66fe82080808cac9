"""nixie.provision.server run as an Ansible module in the lab's controller namespace: start, idempotence,
restart on change, status, stop, and clear failures (port already held, missing files, no privileges)."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
from dhcp_packets import hear_lease
from nixielab.ansiblerun import run_module
from nixielab.net import LabNetwork

from ansible_collections.nixie.provision.plugins.module_utils._bootd import daemon
from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import CONTROLLER_SECRET_FILE, TOKENS_FILE
from ansible_collections.nixie.provision.plugins.module_utils._bootd.runfiles import read_controller_secret

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and ports below 1024")

HOSTS = [{"name": "nixie-01", "mac": "52:54:00:12:00:01"}, {"name": "nixie-02", "mac": "52:54:00:12:00:02", "installed": True}]


@pytest.fixture(scope="module")
def net():
    with LabNetwork(site_dhcp=False) as lab:
        yield lab


@pytest.fixture
def boot_files(tmp_path):
    kernel = tmp_path / "bzImage"
    initrd = tmp_path / "initrd"
    kernel.write_bytes(b"kernel" * 100)
    initrd.write_bytes(b"initrd" * 100)
    public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq3Ae8ciXvwSBoPHmIZVbHJU8KeUiJp6oNX8nn7UBsD deployer@test"
    run_dir = tmp_path / "run"
    yield {"kernel": str(kernel), "initrd": str(initrd), "cmdline": "init=/nix/store/x/init console=ttyS0",
           "authorized_key": public_key, "interface": "nixie0", "hosts": HOSTS, "run_dir": str(run_dir)}
    # Whatever a failed assertion left running must not outlive the test.
    daemon.stop(str(run_dir))


def listening(net, protocol):
    """Local ports with a listening socket in the controller namespace."""
    flag = "-lun" if protocol == "udp" else "-ltn"
    shown = net.run_ctl(["ss", "-H", flag], capture_output=True, text=True, check=True).stdout.split("\n")
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in shown if line.strip()}


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid, encoding="ascii") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_start_is_idempotent_restarts_on_change_and_stops_cleanly(net, boot_files):
    started = run_module("nixie.provision.server", boot_files, netns=net.ctl_ns)
    assert not started["failed"], started
    assert started["changed"] is True and started["running"] is True
    assert started["address"] == "10.213.0.1" and started["http_url"] == "http://10.213.0.1:8080"
    assert {"ipxe.efi", "undionly.kpxe"} <= set(started["ipxe_binaries"])
    # The status URL the playbook prints opens the page, and its secret is not the controller's.
    assert started["status_url"].startswith("http://10.213.0.1:8080/?secret=")
    assert read_controller_secret(boot_files["run_dir"]) not in started["status_url"]
    assert net.curl_ctl(started["status_url"])[0] == 303
    pid = started["pid"]
    assert alive(pid)
    assert {67, 69, 4011} <= listening(net, "udp") and 8080 in listening(net, "tcp")

    again = run_module("nixie.provision.server", boot_files, netns=net.ctl_ns)
    assert again["changed"] is False and again["pid"] == pid, again

    status = run_module("nixie.provision.server", {"run_dir": boot_files["run_dir"], "state": "status"}, netns=net.ctl_ns)
    assert status["changed"] is False and status["running"] is True and status["pid"] == pid

    would_stop = run_module("nixie.provision.server", {"run_dir": boot_files["run_dir"], "state": "stopped"}, netns=net.ctl_ns, check=True)
    assert would_stop["changed"] is True and alive(pid)

    changed_hosts = dict(boot_files, hosts=HOSTS[:1])
    restarted = run_module("nixie.provision.server", changed_hosts, netns=net.ctl_ns)
    assert restarted["changed"] is True and restarted["pid"] != pid, restarted
    assert not alive(pid)

    stopped = run_module("nixie.provision.server", {"run_dir": boot_files["run_dir"], "state": "stopped"}, netns=net.ctl_ns)
    assert stopped["changed"] is True and stopped["running"] is False
    assert not alive(restarted["pid"])
    assert not {67, 69, 4011} & listening(net, "udp") and 8080 not in listening(net, "tcp")
    assert not os.path.exists(os.path.join(boot_files["run_dir"], "server.pid"))

    stopped_again = run_module("nixie.provision.server", {"run_dir": boot_files["run_dir"], "state": "stopped"}, netns=net.ctl_ns)
    assert stopped_again["changed"] is False


def test_a_server_started_again_takes_the_phone_home_its_killed_predecessor_was_owed(net, boot_files):
    first = run_module("nixie.provision.server", boot_files, netns=net.ctl_ns)
    assert not first["failed"], first
    # The controller's namespace plays the machine: its address is the one the machine's DHCP exchange took.
    hear_lease(net.run_ctl, net.ctl_if, "52:54:00:12:00:01", "10.213.0.1")
    status, script = net.curl_ctl("%s/boot/52-54-00-12-00-01.ipxe" % first["http_url"])
    assert status == 200, script
    token = re.search(r"nixie\.token=(\S+)", script).group(1)
    os.kill(first["pid"], signal.SIGKILL)
    while alive(first["pid"]):
        time.sleep(0.05)

    again = run_module("nixie.provision.server", boot_files, netns=net.ctl_ns)
    assert not again["failed"] and again["pid"] != first["pid"], again
    report = {"macs": ["52:54:00:12:00:01"], "ip": "10.213.0.1", "ssh_host_keys": [boot_files["authorized_key"]],
              "disks": [], "os_release": {"ID": "nixos", "VARIANT_ID": "installer"}}
    phone_home = ["-H", "Authorization: Bearer %s" % token, "-H", "Content-Type: application/json",
                  "--data-binary", json.dumps(report), "%s/api/v1/phone-home" % again["http_url"]]
    status, answer = net.curl_ctl(*phone_home)
    assert status == 200 and json.loads(answer) == {"authorized_keys": boot_files["authorized_key"]}, answer
    assert net.curl_ctl("-H", "Authorization: Bearer %s" % ("x" * 43), *phone_home[2:])[0] == 403
    with open(os.path.join(boot_files["run_dir"], TOKENS_FILE), encoding="utf-8") as handle:
        assert json.load(handle) == {}, "a claimed token is no longer owed to anyone"
    # The controller's routes want the secret of this start, which the status call reads from the run directory.
    secret = os.path.join(boot_files["run_dir"], CONTROLLER_SECRET_FILE)
    assert os.stat(secret).st_mode & 0o777 == 0o600
    assert net.curl_ctl("%s/api/v1/awaiting-phone-home" % again["http_url"])[0] == 403
    status = run_module("nixie.provision.server", {"run_dir": boot_files["run_dir"], "state": "status"}, netns=net.ctl_ns)
    assert status["awaiting_phone_home"] == [] and not status["failed"], status
    with open(secret, encoding="ascii") as handle:
        assert handle.read() not in json.dumps(status)


def test_a_machine_whose_dhcp_request_was_lost_gets_its_script_and_a_stranger_does_not(net, boot_files):
    started = run_module("nixie.provision.server", boot_files, netns=net.ctl_ns)
    assert not started["failed"], started
    # No DHCP exchange of either reached the server, as on a lossy network where the one REQUEST naming the address
    # was dropped: the kernel's neighbour table, which the TCP handshake itself needs, ties an address to its MAC.
    script_url = "%s/boot/52-54-00-12-00-01.ipxe" % started["http_url"]
    answers = {}
    for name, mac, address in (("own", "52:54:00:12:00:01", "10.213.0.51"), ("other", "52:54:00:12:00:99", "10.213.0.52")):
        client = net.add_client(name, mac)
        client.run(["ip", "addr", "add", address + "/24", "dev", "eth0"], check=True)
        done = client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", script_url], capture_output=True, text=True)
        answers[name] = done.stdout
    assert answers == {"own": "200", "other": "403"}, answers
    events = [json.loads(line) for line in open(os.path.join(boot_files["run_dir"], "events.jsonl"), encoding="utf-8")]
    assert [(event["step"], event["ip"]) for event in events if event["step"] in ("script", "refused")] == [
        ("script", "10.213.0.51"), ("refused", "10.213.0.52")], events


def test_check_mode_starts_nothing(net, boot_files):
    result = run_module("nixie.provision.server", boot_files, netns=net.ctl_ns, check=True)
    assert result["changed"] is True and result["running"] is False
    assert 67 not in listening(net, "udp")


def test_port_67_held_by_dnsmasq_names_the_holder(net, boot_files, tmp_path):
    pid_file = tmp_path / "dnsmasq.pid"
    net.run_ctl(["dnsmasq", "--port=0", "--interface=nixie0", "--bind-interfaces", "--dhcp-range=10.213.0.50,10.213.0.60",
                 "--pid-file=%s" % pid_file, "--dhcp-leasefile=%s" % (tmp_path / "leases")], check=True)
    dnsmasq_pid = int(pid_file.read_text())
    try:
        result = run_module("nixie.provision.server", boot_files, netns=net.ctl_ns)
        run_module("nixie.provision.server", {"run_dir": boot_files["run_dir"], "state": "stopped"}, netns=net.ctl_ns)
        assert result["failed"], result
        assert "UDP port 67" in result["msg"]
        assert "dnsmasq (pid %d)" % dnsmasq_pid in result["msg"]
    finally:
        os.kill(dnsmasq_pid, 15)
    assert 4011 not in listening(net, "udp"), "a failed start must release what it bound"


def test_http_port_held_names_the_holder(net, boot_files):
    # SO_REUSEADDR as a server has it: the TIME_WAIT connections of the tests before must not stop the holder.
    holder = net.popen_ctl(["python3", "-c", "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                            "s.bind(('10.213.0.1', 8080)); s.listen(); time.sleep(60)"])
    try:
        for dummy in range(50):
            if 8080 in listening(net, "tcp"):
                break
            subprocess.run(["sleep", "0.1"], check=True)
        result = run_module("nixie.provision.server", boot_files, netns=net.ctl_ns)
        run_module("nixie.provision.server", {"run_dir": boot_files["run_dir"], "state": "stopped"}, netns=net.ctl_ns)
        assert result["failed"], result
        assert "TCP port 8080" in result["msg"] and "python3 (pid %d)" % holder.pid in result["msg"]
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("change, message", [
    ({"kernel": "/nonexistent/bzImage"}, "kernel: no such file: /nonexistent/bzImage"),
    ({"ipxe_dir": "/tmp"}, "ipxe_dir: /tmp holds none of undionly.kpxe"),
    ({"hosts": [{"name": "a", "mac": "zz"}]}, "'zz' is not a MAC address"),
    ({"interface": "nope0"}, "no network interface named 'nope0'"),
    ({"hosts": []}, "hosts: the boot server needs at least one host"),
    ({"hosts": [{"name": "a", "mac": "ff:ff:ff:ff:ff:ff"}]}, "'ff:ff:ff:ff:ff:ff' is the broadcast MAC address"),
    ({"hosts": [{"name": "nixie-01\nchain http://evil/", "mac": "52:54:00:12:00:01"}]}, "hosts: host name 'nixie-01\\nchain"),
    ({"hosts": [{"name": "localhost", "mac": "52:54:00:12:00:01"}]}, "hosts: host name 'localhost' is reserved"),
    ({"run_dir": "/proc/nixie/run"}, "run_dir: cannot create /proc/nixie/run"),
    ({"http_port": 0}, "http_port: must be a TCP port from 1 to 65535, got 0"),
    ({"http_port": 99999}, "http_port: must be a TCP port from 1 to 65535, got 99999"),
    ({"authorized_key": ["ssh-ed25519 AAAAC3Nza a@b", "ssh-ed25519 AAAAC3Nzb c@d"]}, "authorized_key: \"['ssh-ed25519"),
    ({"authorized_key": ""}, "authorized_key: no SSH public key given"),
    ({"authorized_key": "# just a comment\n"}, "authorized_key: no SSH public key given"),
    ({"cmdline": "init=/nix/store/x/init\nchain http://evil/"}, "cmdline: must be one line without control characters"),
    # An arm64 host in a run that built only the x86 installer: refused before anything could power it on.
    ({"hosts": [{"name": "nixie-01", "mac": "52:54:00:12:00:01"},
                {"name": "ampere-01", "mac": "52:54:00:12:00:03", "system": "aarch64-linux"}]},
     "no installer for the system of ampere-01 (aarch64-linux); installers were built for x86_64-linux only"),
    ({"installers": [{"system": "aarch64-linux", "kernel": "/nonexistent/Image", "initrd": "/nonexistent/initrd"}]},
     "installers[aarch64-linux].kernel: no such file: /nonexistent/Image"),
])
def test_bad_configuration_fails_before_starting(net, boot_files, change, message):
    result = run_module("nixie.provision.server", dict(boot_files, **change), netns=net.ctl_ns)
    assert result["failed"] and message in result["msg"], result
    assert "Traceback" not in result.get("module_stderr", "")
    assert 67 not in listening(net, "udp")


def test_without_privileges_it_says_what_is_missing(net, boot_files):
    # setpriv drops every capability while staying uid 0, as an unprivileged controller account would be.
    result = run_module("nixie.provision.server", boot_files, netns=net.ctl_ns,
                        wrapper=("setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"))
    assert result["failed"], result
    assert "runs as root but without CAP_NET_BIND_SERVICE" in result["msg"] and "CAP_NET_RAW" in result["msg"], result
    assert "become" not in result["msg"]
