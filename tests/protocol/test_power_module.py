"""nixie.provision.power, run as a real Ansible module against real BMC emulators on loopback.

Redfish: OpenStack's sushy-tools emulator (``sushy-emulator --fake``) over HTTPS with a self-signed
certificate made for the test (nixielab.bmc), with basic authentication, and a fresh state directory per test session. Its fake
driver applies a power change 1 to 11 s after the request, so every check waits on the state it reports.
IPMI: pyghmi's RMCP+ BMC server class in its own process (tests/support/ipmi_bmc.py), which Debian's
ipmitool drives too. What a BMC was told is read from the BMC (its Redfish API, its log, its state file),
not from the module.
"""

import json
import os
import socket
import subprocess
import time

import pytest
import requests
from nixielab.ansiblerun import run_module as run_ansible_module
from nixielab.bmc import USER, FakeSystem, IpmiServer, RedfishEmulator

PASSWORD = "s3cret-Nixie-BMC"
# Each test has its own fake system, in the power state it starts from, so that none waits for another's.
SYSTEMS = {"on-net": "Off", "cycle": "On", "off": "On", "http": "Off", "check": "Off", "password": "Off", "boot": "On"}
# Ansible prints this in place of a no_log value: in a message it would mean the module put the password there.
MASK = "********"


def run_module(args, check=False):
    return run_ansible_module("nixie.provision.power", args, check=check, timeout=60)


def ansible_output(args, *options):
    """Everything ``ansible -m nixie.provision.power`` prints (stdout, then stderr, where warnings go)."""
    done = subprocess.run(["ansible", "localhost", *options, "-m", "nixie.provision.power", "-a", json.dumps(args)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=dict(os.environ, ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
                                   ANSIBLE_NOCOLOR="1"))
    return done.stdout + done.stderr


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting for %s" % what)


class RedfishBmc:
    """A running sushy-emulator: its URL, CA file, log, and plain HTTP access to what it holds."""

    def __init__(self, tmp, systems):
        self.tmp = tmp
        fake = [FakeSystem(name, "52:54:00:00:00:%02x" % index, power) for index, (name, power) in enumerate(systems.items(), 1)]
        emulator = RedfishEmulator(tmp, fake, PASSWORD, port=free_port())
        self.url, self.ca, self.log_path = emulator.url, str(emulator.ca_path), str(emulator.log_path)
        self.paths = {system.name: system.path for system in fake}
        self.log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(emulator.argv(), stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._answers, 20, "sushy-emulator on port %d" % emulator.port)

    def _answers(self):
        try:
            return requests.get(self.url + "/redfish/v1/", verify=self.ca, timeout=1).ok
        except requests.RequestException:
            return False

    def system(self, name):
        response = requests.get(self.url + self.paths[name], auth=(USER, PASSWORD), verify=self.ca, timeout=5)
        response.raise_for_status()
        return response.json()

    def requests_to(self, name):
        """The emulator's access log lines for requests that change system ``name`` (PATCH, POST)."""
        with open(self.log_path, encoding="utf-8") as handle:
            return [line for line in handle if self.paths[name] in line and ("PATCH " in line or "POST " in line)]

    def args(self, name, **extra):
        return dict(dict(driver="redfish", address=self.url, system=self.paths[name], username=USER, password=PASSWORD,
                         ca_path=self.ca, timeout=25), **extra)

    def stop(self):
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def redfish_bmc(tmp_path_factory):
    bmc = RedfishBmc(str(tmp_path_factory.mktemp("redfish") / "bmc"), SYSTEMS)
    yield bmc
    bmc.stop()


class IpmiBmc:
    """tests/support/ipmi_bmc.py running on a loopback UDP port; ``state()`` is what it holds."""

    def __init__(self, tmp):
        password_file = os.path.join(tmp, "password")
        with open(password_file, "w", encoding="utf-8") as handle:
            handle.write(PASSWORD)
        self.server = IpmiServer(tmp, password_file, port=free_port(socket.SOCK_DGRAM), delay=1.5)
        self.port = self.server.port
        self.process = subprocess.Popen(self.server.argv())
        wait_until(self.server.state_path.exists, 10, "the IPMI BMC")

    def state(self):
        return self.server.state()

    def args(self, **extra):
        return dict(dict(driver="ipmi", address="127.0.0.1", port=self.port, username=USER, password=PASSWORD,
                         timeout=15), **extra)

    def ipmitool(self, *argv):
        return subprocess.run(["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(self.port), "-U", USER,
                               "-P", PASSWORD] + list(argv), capture_output=True, text=True, timeout=20, check=True).stdout

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def ipmi_bmc(tmp_path):
    bmc = IpmiBmc(str(tmp_path))
    yield bmc
    bmc.stop()


def assert_no_password(result):
    text = json.dumps(result)
    assert PASSWORD not in text and MASK not in result.get("msg", ""), result


# Redfish


def test_redfish_on_with_network_boot_once_then_idempotent(redfish_bmc):
    result = run_module(redfish_bmc.args("on-net", state="on", boot_once="network"))
    assert result["failed"] is False and result["changed"] is True, result
    assert result["power_state_before"] == "off" and result["power_state_after"] == "on"
    assert result["actions"] == ["boot once from network (Pxe)", "power on (On)"]
    assert result["system"] == redfish_bmc.paths["on-net"]
    system = redfish_bmc.system("on-net")
    assert system["PowerState"] == "On"
    assert system["Boot"]["BootSourceOverrideTarget"] == "Pxe" and system["Boot"]["BootSourceOverrideMode"] == "UEFI"
    assert result["boot_override"]["target"] == "Pxe" and result["boot_override"]["mode"] == "uefi"
    assert_no_password(result)

    again = run_module(redfish_bmc.args("on-net", state="on"))
    assert again["changed"] is False and again["actions"] == [] and again["power_state_after"] == "on", again
    assert again["boot_override"]["device"] == "network"


def test_redfish_cycle(redfish_bmc):
    result = run_module(redfish_bmc.args("cycle", state="cycle", boot_once="network"))
    assert result["changed"] is True, result
    assert result["actions"] == ["boot once from network (Pxe)", "power cycle (ForceRestart)"]
    assert result["power_state_before"] == "on" and result["power_state_after"] == "on"
    assert any("POST %s/Actions/ComputerSystem.Reset " % redfish_bmc.paths["cycle"] in line
               for line in redfish_bmc.requests_to("cycle"))
    system = redfish_bmc.system("cycle")
    assert system["PowerState"] == "On" and system["Boot"]["BootSourceOverrideTarget"] == "Pxe"


def test_redfish_boot_cycles_a_running_machine_then_the_override_is_cleared(redfish_bmc):
    booted = run_module(redfish_bmc.args("boot", state="boot", boot_once="network"))
    assert booted["actions"] == ["boot once from network (Pxe)", "power cycle (ForceRestart)"], booted
    assert redfish_bmc.system("boot")["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    cleared = ansible_output(redfish_bmc.args("boot", boot_once="none"))
    assert '"clear the pending boot override (Pxe)"' in cleared, cleared
    # The emulator keeps every override enabled ("Continuous") and ignores Disabled: the disk is what is left.
    assert "[WARNING]: Redfish BMC %s keeps its boot override enabled" % redfish_bmc.url in cleared
    assert redfish_bmc.system("boot")["Boot"]["BootSourceOverrideTarget"] == "Hdd"
    assert run_module(redfish_bmc.args("boot", boot_once="none"))["changed"] is False


def test_redfish_off(redfish_bmc):
    result = run_module(redfish_bmc.args("off", state="off"))
    assert result["power_state_after"] == "off" and result["actions"] == ["power off (ForceOff)"], result
    assert redfish_bmc.system("off")["PowerState"] == "Off"


def test_redfish_http_boot_once(redfish_bmc):
    result = run_module(redfish_bmc.args("http", boot_once="http"))
    assert result["changed"] is True and result["actions"] == ["boot once from http (UefiHttp)"], result
    boot = redfish_bmc.system("http")["Boot"]
    # The emulator stores UefiHttp without a URI as Pxe (its way of "take the URL from DHCP"), in UEFI mode.
    assert boot["BootSourceOverrideTarget"] == "Pxe" and boot["BootSourceOverrideMode"] == "UEFI"
    assert result["power_state_after"] == "off"


def test_redfish_http_boot_uri_the_bmc_refuses_fails_with_the_http_status(redfish_bmc):
    # The fake driver cannot record an HttpBootUri and answers 400: a BMC refusing the override.
    result = run_module(redfish_bmc.args("http", boot_once="http", http_boot_uri="http://127.0.0.1:9/ipxe.efi"))
    assert result["failed"] is True, result
    assert result["msg"].startswith("Redfish BMC %s: cannot set a one-time boot from UefiHttp: HTTP 400" % redfish_bmc.url)
    assert result["status"] == 400


def test_redfish_check_mode_changes_nothing(redfish_bmc):
    before = redfish_bmc.system("check")
    result = run_module(redfish_bmc.args("check", state="cycle", boot_once="network"), check=True)
    assert result["changed"] is True and result["failed"] is False, result
    assert result["actions"] == ["boot once from network (Pxe)", "power on (On)"]
    assert result["power_state_after"] == "on" and result["boot_override"]["target"] == "Pxe"
    assert redfish_bmc.requests_to("check") == []
    after = redfish_bmc.system("check")
    assert after["PowerState"] == "Off" and after["Boot"] == before["Boot"]


def test_redfish_wrong_password_fails_clearly_without_the_password(redfish_bmc):
    args = redfish_bmc.args("password", state="on", password="not-" + PASSWORD)
    result = run_module(args)
    assert result["failed"] is True
    assert result["msg"].startswith("Redfish BMC %s: cannot " % redfish_bmc.url) and "HTTP 401" in result["msg"], result
    assert_no_password(result)
    assert "not-" + PASSWORD not in json.dumps(result)
    assert redfish_bmc.system("password")["PowerState"] == "Off"


def test_redfish_password_appears_in_no_output_at_any_verbosity(redfish_bmc):
    args = redfish_bmc.args("password", state="status", password="wrong-" + PASSWORD)
    output = ansible_output(args, "-vvvv")
    assert "HTTP 401" in output, output
    assert "wrong-" + PASSWORD not in output


def test_redfish_default_tls_verification_refuses_the_self_signed_certificate(redfish_bmc):
    args = redfish_bmc.args("on-net")
    del args["ca_path"]
    result = run_module(args)
    assert result["failed"] is True and "CERTIFICATE_VERIFY_FAILED" in result["msg"], result
    assert result["msg"].startswith("Redfish BMC %s: cannot open a session" % redfish_bmc.url)


def test_redfish_validate_certs_false_works_and_warns(redfish_bmc):
    args = redfish_bmc.args("password", validate_certs=False)
    del args["ca_path"]
    output = ansible_output(args)
    assert '"power_state_before": "off"' in output, output
    assert "[WARNING]: the TLS certificate of %s is not verified" % redfish_bmc.url in output


def test_redfish_several_systems_need_system_and_are_listed(redfish_bmc):
    args = redfish_bmc.args("on-net")
    del args["system"]
    result = run_module(args)
    assert result["failed"] is True
    assert "Redfish BMC %s has %d systems" % (redfish_bmc.url, len(SYSTEMS)) in result["msg"], result
    assert all(path in result["msg"] for path in redfish_bmc.paths.values())


def test_redfish_the_only_system_is_found(tmp_path):
    bmc = RedfishBmc(str(tmp_path / "single"), {"only": "Off"})
    try:
        args = bmc.args("only")
        del args["system"]
        result = run_module(args)
        assert result["failed"] is False and result["system"] == bmc.paths["only"], result
        assert result["power_state_before"] == "off"
    finally:
        bmc.stop()


def test_redfish_bmc_that_is_down_fails_in_bounded_time():
    port = free_port()
    started = time.monotonic()
    result = run_module(dict(driver="redfish", address="https://127.0.0.1:%d" % port, username=USER,
                             password=PASSWORD, timeout=2, state="on"))
    assert result["failed"] is True
    assert result["msg"].startswith("Redfish BMC https://127.0.0.1:%d: cannot open a session: " % port), result
    assert time.monotonic() - started < 20


def test_redfish_bmc_that_never_answers_times_out():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = run_module(dict(driver="redfish", address="https://127.0.0.1:%d" % port, username=USER,
                                 password=PASSWORD, timeout=1, state="on"))
    assert result["failed"] is True and "timed out" in result["msg"], result
    assert result["msg"].startswith("Redfish BMC https://127.0.0.1:%d: cannot open a session" % port)
    assert time.monotonic() - started < 20


# IPMI


def test_ipmi_on_with_network_boot_once_uefi(ipmi_bmc):
    result = run_module(ipmi_bmc.args(state="on", boot_once="network", boot_mode="uefi"))
    assert result["failed"] is False and result["changed"] is True, result
    assert result["power_state_before"] == "off" and result["power_state_after"] == "on"
    assert result["actions"] == ["boot once from network (pxe)", "power on (on)"]
    assert result["boot_override"] == {"device": "network", "once": True, "mode": "uefi", "target": "pxe",
                                       "http_boot_uri": None}
    state = ipmi_bmc.state()
    assert state["power"] == "on" and state["controls"] == ["on"]
    assert state["boot_flags"] == [0xA0, 0x04, 0, 0, 0]  # valid, next boot only, EFI; PXE
    assert_no_password(result)
    # An independent client reads the same BMC the same way.
    assert "Chassis Power is on" in ipmi_bmc.ipmitool("chassis", "power", "status")
    flags = ipmi_bmc.ipmitool("chassis", "bootparam", "get", "5")
    assert "Force PXE" in flags and "Options apply to only next boot" in flags and "EFI" in flags

    again = run_module(ipmi_bmc.args(state="on", boot_once="network", boot_mode="uefi"))
    assert again["changed"] is False and again["actions"] == [], again


def test_ipmi_cycle_off_and_status(ipmi_bmc):
    ipmi_bmc.ipmitool("chassis", "power", "on")
    wait_until(lambda: "is on" in ipmi_bmc.ipmitool("chassis", "power", "status"), 10, "ipmitool's power on")
    cycled = run_module(ipmi_bmc.args(state="cycle", boot_once="network"))
    assert cycled["actions"] == ["boot once from network (pxe)", "power cycle (cycle)"], cycled
    assert cycled["power_state_before"] == "on" and cycled["power_state_after"] == "on"
    assert ipmi_bmc.state()["controls"] == ["on", "cycle"]
    assert ipmi_bmc.state()["boot_flags"] == [0x80, 0x04, 0, 0, 0]  # no EFI flag without boot_mode uefi

    off = run_module(ipmi_bmc.args(state="off"))
    assert off["power_state_after"] == "off" and ipmi_bmc.state()["power"] == "off", off
    status = run_module(ipmi_bmc.args())
    assert status["changed"] is False and status["power_state_before"] == "off", status
    assert "Chassis Power is off" in ipmi_bmc.ipmitool("chassis", "power", "status")


def test_ipmi_boot_with_the_password_from_the_environment_then_clear(ipmi_bmc, monkeypatch):
    args = ipmi_bmc.args(state="boot", boot_once="network", password_env="NIXIE_TEST_BMC_PASSWORD")
    del args["password"]
    unset = run_module(args)
    assert unset["failed"] and "NIXIE_TEST_BMC_PASSWORD, which is not set" in unset["msg"], unset
    monkeypatch.setenv("NIXIE_TEST_BMC_PASSWORD", PASSWORD)
    first = run_module(args)
    assert first["actions"] == ["boot once from network (pxe)", "power on (on)"], first
    again = run_module(args)
    assert again["actions"] == ["power cycle (cycle)"], "the override is still pending, so only the reset goes out"
    assert ipmi_bmc.state()["controls"] == ["on", "cycle"]
    assert_no_password(first)
    cleared = run_module(dict(args, state="status", boot_once="none"))
    assert cleared["actions"] == ["clear the pending boot override (pxe)"] and cleared["boot_override"] is None, cleared
    assert ipmi_bmc.state()["boot_flags"][0] & 0x80 == 0, "the boot flags are no longer valid"
    assert "No override" in ipmi_bmc.ipmitool("chassis", "bootparam", "get", "5")


def test_ipmi_check_mode_changes_nothing(ipmi_bmc):
    before = ipmi_bmc.state()
    result = run_module(ipmi_bmc.args(state="cycle", boot_once="network", boot_mode="uefi"), check=True)
    assert result["changed"] is True and result["actions"] == ["boot once from network (pxe)", "power on (on)"], result
    assert result["power_state_after"] == "on"
    time.sleep(2)  # longer than the BMC's delay, in case a command had gone out
    assert ipmi_bmc.state() == before


def test_ipmi_wrong_password_fails_clearly(ipmi_bmc):
    result = run_module(ipmi_bmc.args(state="on", password="not-" + PASSWORD))
    assert result["failed"] is True
    assert result["msg"] == "IPMI BMC 127.0.0.1:%d: cannot log in: Incorrect password provided" % ipmi_bmc.port, result
    assert_no_password(result)
    assert ipmi_bmc.state()["controls"] == []


def test_ipmi_has_no_http_boot(ipmi_bmc):
    result = run_module(ipmi_bmc.args(boot_once="http"))
    assert result["failed"] is True and "IPMI has no http boot device" in result["msg"], result


def test_ipmi_bmc_that_is_down_fails_in_bounded_time():
    port = free_port(socket.SOCK_DGRAM)
    started = time.monotonic()
    result = run_module(dict(driver="ipmi", address="127.0.0.1", port=port, username=USER, password=PASSWORD,
                             state="on"))
    assert result["failed"] is True
    assert result["msg"] == "IPMI BMC 127.0.0.1:%d: cannot log in: no answer" % port, result
    assert time.monotonic() - started < 20


# Wake-on-LAN through the same module


def test_wol_cannot_power_off_or_cycle():
    for state in ("off", "cycle"):
        result = run_module(dict(mac="bc:24:11:d0:28:34", state=state))
        assert result["failed"] is True and "the wol driver cannot" in result["msg"], result


def test_wol_on_sends_a_magic_packet():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        for state in ("on", "boot"):
            result = run_module(dict(mac="bc:24:11:d0:28:34", broadcast="127.0.0.1", wol_port=receiver.getsockname()[1],
                                     state=state, boot_once="network"))
            assert result["changed"] is True and result["actions"] == ["power on (magic packet)"], result
            assert result["power_state_after"] == "unknown" and result["boot_override"] is None
            assert receiver.recvfrom(2048)[0] == b"\xff" * 6 + bytes.fromhex("bc2411d02834") * 16
