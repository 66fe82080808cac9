"""The power drivers' pure parts: state transitions, Redfish choices, IPMI boot flags, and run() on a fake BMC."""

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._power import control, ipmi, redfish
from ansible_collections.nixie.provision.plugins.module_utils._power.base import PowerDriver, PowerError, PowerTimeout, boot_override


@pytest.mark.parametrize("state, current, action", [
    ("on", "off", "on"), ("on", "on", None), ("on", "unknown", "on"),
    ("off", "on", "off"), ("off", "off", None), ("off", "unknown", "off"),
    ("cycle", "on", "cycle"), ("cycle", "off", "on"), ("cycle", "unknown", "cycle"),
    ("status", "on", None), ("status", "off", None),
])
def test_power_action(state, current, action):
    assert control.power_action(state, current) == action


def test_expected_state():
    assert [control.expected_state(action) for action in ("on", "off", "cycle")] == ["on", "off", "on"]


def test_override_matches_only_a_one_time_override_of_the_same_device_and_mode():
    request = boot_override("network", True, "uefi", "Pxe")
    assert control.override_matches(boot_override("network", True, "uefi", "Pxe"), request)
    assert not control.override_matches(None, request)
    assert not control.override_matches(boot_override("network", False, "uefi", "Pxe"), request)
    assert not control.override_matches(boot_override("disk", True, "uefi", "Hdd"), request)
    assert not control.override_matches(boot_override("network", True, "bios", "Pxe"), request)
    assert control.override_matches(boot_override("network", True, "bios", "Pxe"), boot_override("network", True, None, "Pxe"))


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class FakeBmc(PowerDriver):
    """Applies a power change after ``delay`` seconds of the fake clock, and records what it was told."""

    name = "fake"

    def __init__(self, clock, power="off", delay=2.5, reset="Reset"):
        super().__init__("fake:1")
        self.clock, self.power, self.delay, self.reset = clock, power, delay, reset
        self.pending, self.override, self.sent = None, None, []

    def power_state(self):
        if self.pending and self.clock() >= self.pending[1]:
            self.power, self.pending = self.pending[0], None
        return self.power

    def boot_override(self):
        return self.override

    def boot_request(self, device, mode, http_boot_uri):
        return boot_override(device, True, mode, device.upper())

    def set_boot_once(self, request):
        self.sent.append(("boot", request["device"]))
        self.override = request

    def power_command(self, action):
        return "%s-%s" % (self.reset, action)

    def send_power(self, command):
        self.sent.append(("power", command))
        self.pending = ("off" if command.endswith("off") else "on", self.clock() + self.delay)


def run(bmc, clock, state, **kwargs):
    return control.run(bmc, state, clock=clock, sleep=clock.sleep, **kwargs)


def test_run_sets_the_override_then_powers_on_and_waits_for_the_bmc():
    clock = FakeClock()
    bmc = FakeBmc(clock)
    result = run(bmc, clock, "on", boot_once="network", boot_mode="uefi")
    assert bmc.sent == [("boot", "network"), ("power", "Reset-on")]
    assert result["changed"] and result["power_state_before"] == "off" and result["power_state_after"] == "on"
    assert result["actions"] == ["boot once from network (NETWORK)", "power on (Reset-on)"]
    assert result["boot_override"]["device"] == "network"
    assert clock.now >= 102.5


def test_run_is_idempotent():
    clock = FakeClock()
    bmc = FakeBmc(clock, power="on")
    bmc.override = boot_override("network", True, "uefi", "NETWORK")
    result = run(bmc, clock, "on", boot_once="network", boot_mode="uefi")
    assert bmc.sent == [] and result["changed"] is False and result["actions"] == []


def test_check_mode_reads_only_and_reports_what_it_would_do():
    clock = FakeClock()
    bmc = FakeBmc(clock)
    result = run(bmc, clock, "cycle", boot_once="disk", check_mode=True)
    assert bmc.sent == []
    assert result["changed"] and result["power_state_after"] == "on"
    assert result["actions"] == ["boot once from disk (DISK)", "power on (Reset-on)"]
    assert result["boot_override"]["device"] == "disk"


def test_wait_gives_up_at_the_deadline_with_the_state_last_seen():
    clock = FakeClock()
    bmc = FakeBmc(clock, delay=30)
    with pytest.raises(PowerTimeout, match="fake BMC fake:1 still reports power off, not on") as caught:
        run(bmc, clock, "on", timeout=5)
    assert caught.value.details == {"power_state_after": "off"}
    assert 105 <= clock.now < 106


def test_a_transitional_state_is_awaited_before_acting():
    clock = FakeClock()
    bmc = FakeBmc(clock, power="powering on")
    bmc.pending = ("on", 102)
    result = run(bmc, clock, "on")
    assert result["power_state_before"] == "on" and bmc.sent == []


@pytest.mark.parametrize("action, allowed, chosen", [
    ("on", {"On", "ForceOff", "ForceRestart"}, "On"),
    ("on", {"ForceOn", "ForceOff"}, "ForceOn"),
    ("off", {"On", "ForceOff", "GracefulShutdown"}, "ForceOff"),
    ("cycle", {"On", "ForceOff", "ForceRestart", "PowerCycle"}, "ForceRestart"),
    ("cycle", {"On", "ForceOff", "PowerCycle"}, "PowerCycle"),
])
def test_choose_reset_type(action, allowed, chosen):
    assert redfish.choose_reset_type(action, allowed) == chosen


def test_no_allowed_reset_type_fails_listing_what_the_bmc_allows():
    with pytest.raises(PowerError, match=r"no reset type to power cycle \(wanted ForceRestart or PowerCycle; "
                                         r"it allows GracefulRestart, On\)"):
        redfish.choose_reset_type("cycle", {"On", "GracefulRestart"})


@pytest.mark.parametrize("device, mode, reported, expected", [
    ("network", None, "UEFI", ("Pxe", "UEFI")),
    ("network", None, "Legacy", ("Pxe", "Legacy")),
    ("network", None, None, ("Pxe", None)),
    ("network", "bios", "UEFI", ("Pxe", "Legacy")),
    ("disk", "uefi", "Legacy", ("Hdd", "UEFI")),
    ("http", None, "Legacy", ("UefiHttp", "UEFI")),
])
def test_boot_target(device, mode, reported, expected):
    assert redfish.boot_target(device, mode, reported) == expected


def test_http_boot_in_bios_mode_is_refused():
    with pytest.raises(PowerError, match="http needs boot_mode uefi"):
        redfish.boot_target("http", "bios", "UEFI")


@pytest.mark.parametrize("address, port, url", [
    ("10.0.0.21", None, "https://10.0.0.21"),
    ("https://10.0.0.21:8443/", None, "https://10.0.0.21:8443"),
    ("http://bmc.example", 8000, "http://bmc.example:8000"),
    ("::1", None, "https://[::1]"),
    ("https://[::1]:8000", None, "https://[::1]:8000"),
])
def test_base_url(address, port, url):
    assert redfish.base_url(address, port) == url


def test_base_url_refuses_other_schemes():
    with pytest.raises(PowerError, match="address: 'ftp://x' is not a host"):
        redfish.base_url("ftp://x")


def test_boot_flags_are_what_ipmitool_sends():
    # Captured from `ipmitool chassis bootdev pxe options=efiboot` (and without the option) at a pyghmi BMC.
    assert ipmi.boot_flags("network", uefi=True) == (5, 0xA0, 0x04, 0, 0, 0)
    assert ipmi.boot_flags("network", uefi=False) == (5, 0x80, 0x04, 0, 0, 0)
    assert ipmi.boot_flags("disk", uefi=False) == (5, 0x80, 0x08, 0, 0, 0)
    with pytest.raises(PowerError, match="IPMI has no http boot device"):
        ipmi.boot_flags("http", uefi=True)


@pytest.mark.parametrize("data, override", [
    (bytes([1, 5, 0xA0, 0x04, 0, 0, 0]), boot_override("network", True, "uefi", "pxe")),
    (bytes([1, 5, 0xC0, 0x08, 0, 0, 0]), boot_override("disk", False, "bios", "disk")),
    (bytes([1, 5, 0x80, 0x14, 0, 0, 0]), boot_override("other", True, "bios", "cdrom")),
    (bytes([1, 5, 0x00, 0x04, 0, 0, 0]), None),  # flags not valid
    (bytes([1, 0x85, 0xA0, 0x04, 0, 0, 0]), None),  # parameter marked invalid
    (bytes([1, 5, 0x80, 0x00, 0, 0, 0]), None),  # no override
])
def test_parse_boot_flags(data, override):
    assert ipmi.parse_boot_flags(data) == override
