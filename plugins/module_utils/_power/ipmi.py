# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The IPMI driver, through pyghmi (the pure-Python IPMI client Ironic and VirtualBMC use), over RMCP+.

Commands go through pyghmi's ``xraw_command``, whose errors keep the IPMI completion code; its helpers
(``set_power``, ``set_bootdev``) drop it. The byte layouts are those of the IPMI 2.0 specification,
section 28 (chassis commands) and table 28-14 (boot option parameter 5, the boot flags).
"""

from __future__ import annotations

import traceback

from ansible_collections.nixie.provision.plugins.module_utils._power.base import PowerDriver, PowerError, boot_override

try:
    from pyghmi import exceptions as pyghmi_exceptions
    from pyghmi.ipmi import command as pyghmi_command
except ImportError:
    pyghmi_command = None
    PYGHMI_IMPORT_ERROR = traceback.format_exc()
else:
    PYGHMI_IMPORT_ERROR = None

CHASSIS_NETFN = 0x00
GET_CHASSIS_STATUS = 0x01
CHASSIS_CONTROL = 0x02
SET_BOOT_OPTIONS = 0x08
GET_BOOT_OPTIONS = 0x09
CONTROLS = {"off": 0x00, "on": 0x01, "cycle": 0x02}
BOOT_FLAGS = 5
# Parameter 3, bit 3: keep the override past the 60 s after which a BMC clears it when no chassis control
# follows, as when a machine that is already on gets a boot override for its next boot.
VALID_BIT_CLEARING = 3
KEEP_PAST_TIMEOUT = 0x08
FLAGS_VALID = 0x80
FLAGS_PERSISTENT = 0x40
FLAGS_EFI = 0x20
# Boot device selectors (data 2, bits 5:2), with ipmitool's names for them.
SELECTORS = {"network": 0x1, "disk": 0x2}
SELECTOR_NAMES = {0x1: "pxe", 0x2: "disk", 0x3: "safe", 0x4: "diag", 0x5: "cdrom", 0x6: "bios", 0xF: "floppy"}
DEVICES = {selector: device for device, selector in SELECTORS.items()}


class IpmiError(PowerError):
    """An IPMI request failed; the message names the BMC and the completion code when there is one."""


def boot_flags(device: str, uefi: bool) -> tuple[int, ...]:
    """The Set System Boot Options data that boots ``device`` once, with the EFI flag when ``uefi``."""
    if device not in SELECTORS:
        raise IpmiError("boot_once: IPMI has no %s boot device (it offers network and disk)" % device)
    return (BOOT_FLAGS, FLAGS_VALID | (FLAGS_EFI if uefi else 0), SELECTORS[device] << 2, 0, 0, 0)


def parse_boot_flags(data: bytes) -> dict | None:
    """The override that a Get System Boot Options answer for parameter 5 describes, or None for none.

    ``data`` is the answer after the completion code: parameter version, parameter number (bit 7 set when
    the parameter is invalid), then the five bytes of boot flags.
    """
    if len(data) < 4 or data[1] & 0x80 or not data[2] & FLAGS_VALID:
        return None
    selector = (data[3] >> 2) & 0xF
    if not selector:
        return None
    return boot_override(DEVICES.get(selector, "other"), not data[2] & FLAGS_PERSISTENT,
                         "uefi" if data[2] & FLAGS_EFI else "bios", SELECTOR_NAMES.get(selector, "0x%x" % selector))


def _text(exc) -> str:
    # pyghmi raises IpmiException(None) when the BMC never answered.
    return str(exc.args[0]) if exc.args and exc.args[0] else "no answer"


class IpmiDriver(PowerDriver):
    """The machine behind one IPMI BMC, reached over RMCP+ (IPMI 2.0 over LAN)."""

    name = "ipmi"

    def __init__(self, address: str, username: str, password: str, port: int = 623) -> None:
        super().__init__("[%s]:%d" % (address, port) if ":" in address else "%s:%d" % (address, port))
        try:
            self._command = pyghmi_command.Command(bmc=address, userid=username, password=password, port=port,
                                                   keepalive=False)
        except pyghmi_exceptions.IpmiException as exc:
            raise IpmiError("IPMI BMC %s: cannot log in: %s" % (self.address, _text(exc))) from None

    def _raw(self, what, netfn, command, data=()):
        try:
            return self._command.xraw_command(netfn=netfn, command=command, data=data)["data"]
        except pyghmi_exceptions.IpmiException as exc:
            code = " (completion code 0x%02x)" % exc.ipmicode if exc.ipmicode else ""
            raise IpmiError("IPMI BMC %s: %s: %s%s" % (self.address, what, _text(exc), code),
                            completion_code=exc.ipmicode or None) from None

    def power_state(self) -> str:
        status = self._raw("cannot read the chassis status", CHASSIS_NETFN, GET_CHASSIS_STATUS)
        return "on" if status[0] & 0x01 else "off"

    def boot_override(self) -> dict | None:
        return parse_boot_flags(bytes(self._raw("cannot read the boot flags", CHASSIS_NETFN, GET_BOOT_OPTIONS,
                                                (BOOT_FLAGS, 0, 0))))

    def boot_request(self, device: str, mode: str | None, http_boot_uri: str | None) -> dict | None:
        flags = boot_flags(device, mode == "uefi")
        return boot_override(device, True, mode or "bios", SELECTOR_NAMES[flags[2] >> 2])

    def set_boot_once(self, request: dict) -> None:
        self._raw("cannot keep the boot flags valid", CHASSIS_NETFN, SET_BOOT_OPTIONS,
                  (VALID_BIT_CLEARING, KEEP_PAST_TIMEOUT))
        self._raw("cannot set the boot flags", CHASSIS_NETFN, SET_BOOT_OPTIONS,
                  boot_flags(request["device"], request["mode"] == "uefi"))

    def clear_boot_override(self) -> None:
        # Boot flags without their valid bit: the BMC then hands the firmware no override.
        self._raw("cannot clear the boot flags", CHASSIS_NETFN, SET_BOOT_OPTIONS, (BOOT_FLAGS, 0, 0, 0, 0, 0))

    def power_command(self, action: str) -> str:
        return action

    def send_power(self, command: str) -> None:
        self._raw("cannot power %s" % command, CHASSIS_NETFN, CHASSIS_CONTROL, (CONTROLS[command],))

    def close(self) -> None:
        try:
            self._command.ipmi_session.logout()
        except Exception:  # a BMC that is gone cannot end its session; nothing is left to do
            pass
