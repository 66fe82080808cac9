# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redfish driver, through sushy (the client Ironic and Metal3 use, with the vendor quirks they met)."""

from __future__ import annotations

import logging
import traceback
from urllib.parse import urlsplit

from ansible_collections.nixie.provision.plugins.module_utils._power.base import UNKNOWN, PowerDriver, PowerError, boot_override

try:
    import sushy
    import sushy.auth
    from sushy import exceptions as sushy_exceptions
except ImportError:
    sushy = None
    SUSHY_IMPORT_ERROR = traceback.format_exc()
else:
    SUSHY_IMPORT_ERROR = None
    # sushy logs warnings (a fallback to basic authentication, retries); with no handler configured,
    # Python would print them on the module's stderr, which is not where a module reports.
    logging.getLogger("sushy").addHandler(logging.NullHandler())

# Preferred first. ForceRestart is what Ironic resets with; PowerCycle (off, then on) where only it is offered.
RESET_TYPES = {
    "on": ("On", "ForceOn"),
    "off": ("ForceOff",),
    "cycle": ("ForceRestart", "PowerCycle"),
}
TARGETS = {"network": "Pxe", "http": "UefiHttp", "disk": "Hdd"}
DEVICES = {target: device for device, target in TARGETS.items()}
POWER_STATES = {"On": "on", "Off": "off", "PoweringOn": "powering on", "PoweringOff": "powering off"}
MODES = {"uefi": "UEFI", "bios": "Legacy"}
REDFISH_MODES = {value: mode for mode, value in MODES.items()}
# Bounds how long a BMC answering 5xx or dropping connections holds a request (sushy's default: 10 x 3 s).
SERVER_SIDE_RETRIES = 3
SERVER_SIDE_RETRY_DELAY = 1


class RedfishError(PowerError):
    """A Redfish request failed; the message names the BMC and, when it answered, the HTTP status."""


def base_url(address: str, port: int | None = None) -> str:
    """``https://host[:port]`` for ``address``, which may be a bare host name or address or a URL."""
    if "://" not in address:
        # A bare IPv6 address gets its brackets, which a URL needs around it.
        address = "https://" + ("[%s]" % address if address.count(":") > 1 and "[" not in address else address)
    url = urlsplit(address)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise RedfishError("address: %r is not a host or an http(s) URL" % address)
    netloc = "[%s]" % url.hostname if ":" in url.hostname else url.hostname
    if port or url.port:
        netloc += ":%d" % (port or url.port)
    return "%s://%s" % (url.scheme, netloc)


def choose_reset_type(action: str, allowed: set[str]) -> str:
    """The ResetType that carries out ``action`` among the ``allowed`` ones (ResetType@Redfish.AllowableValues)."""
    for reset_type in RESET_TYPES[action]:
        if reset_type in allowed:
            return reset_type
    raise RedfishError("the BMC offers no reset type to power %s (wanted %s; it allows %s)" % (
        action, " or ".join(RESET_TYPES[action]), ", ".join(sorted(allowed)) or "none"))


def boot_target(device: str, mode: str | None, reported_mode: str | None) -> tuple[str, str | None]:
    """The BootSourceOverrideTarget and BootSourceOverrideMode (or None to leave it) for a one-time boot.

    Without an explicit ``mode`` the override keeps the firmware mode the BMC reports, since switching a
    UEFI machine to Legacy for one boot makes it miss its network boot entries. HTTP boot exists in UEFI only.
    """
    if device == "http":
        if mode == "bios":
            raise RedfishError("boot_once: http needs boot_mode uefi (HTTP boot is a UEFI feature)")
        return TARGETS[device], MODES["uefi"]
    return TARGETS[device], MODES.get(mode) or reported_mode


def _explain(exc) -> str:
    if isinstance(exc, sushy_exceptions.HTTPError):
        return "HTTP %s %s%s" % (exc.status_code, exc.code, ": %s" % exc.detail if exc.detail else "")
    return str(exc)


class RedfishDriver(PowerDriver):
    """One ComputerSystem of a Redfish service."""

    name = "redfish"

    def __init__(self, address: str, username: str, password: str, system: str | None = None, port: int | None = None,
                 validate_certs: bool = True, ca_path: str | None = None, timeout: float = 30) -> None:
        super().__init__(base_url(address, port))
        verify = (ca_path or True) if validate_certs else False
        if not validate_certs:
            self.warnings.append("the TLS certificate of %s is not verified (validate_certs: false)" % self.address)
        # Our own authentication object, so that close() can end the session through sushy's public API.
        self._auth = sushy.auth.SessionOrBasicAuth(username=username, password=password)
        self._root = self._call("cannot open a session", sushy.Sushy, self.address, auth=self._auth, verify=verify,
                                read_timeout=timeout, connect_timeout=timeout,
                                server_side_retries=SERVER_SIDE_RETRIES,
                                server_side_retries_delay=SERVER_SIDE_RETRY_DELAY)
        self._system = self._call("cannot read the system", self._find_system, system)
        self.system = self._system.path

    def _call(self, what, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except sushy_exceptions.SushyError as exc:
            raise RedfishError("Redfish BMC %s: %s: %s" % (self.address, what, _explain(exc)),
                               status=getattr(exc, "status_code", None)) from None

    def _find_system(self, system):
        collection = self._root.get_system_collection()
        if system:
            path = system if system.startswith("/") else "%s/%s" % (collection.path.rstrip("/"), system)
        else:
            members = sorted(collection.members_identities)
            if len(members) != 1:
                raise RedfishError("Redfish BMC %s has %d systems (%s): set system to one of them" % (
                    self.address, len(members), ", ".join(members) or "none"))
            path = members[0]
        return self._root.get_system(path)

    def _refresh(self):
        self._call("cannot read the system %s" % self.system, self._system.refresh, force=True)

    def power_state(self) -> str:
        self._refresh()
        state = self._system.power_state
        return POWER_STATES.get(state.value, state.value.lower()) if state else UNKNOWN

    def boot_override(self) -> dict | None:
        self._refresh()
        boot = self._system.boot
        if boot is None or boot.target is None or boot.enabled in (None, sushy.BootSourceOverrideEnabled.DISABLED):
            return None
        target = boot.target.value
        if target == "None":
            return None
        return boot_override(DEVICES.get(target, "other"), boot.enabled == sushy.BootSourceOverrideEnabled.ONCE,
                             REDFISH_MODES.get(boot.mode.value) if boot.mode else None, target, boot.http_boot_uri)

    def boot_request(self, device: str, mode: str | None, http_boot_uri: str | None) -> dict | None:
        self._refresh()
        reported = self._system.boot.mode.value if self._system.boot and self._system.boot.mode else None
        target, redfish_mode = boot_target(device, mode, reported)
        allowed = {source.value for source in self._system.get_allowed_system_boot_source_values()}
        if target not in allowed:
            raise RedfishError("Redfish BMC %s: system %s offers no one-time boot from %s (BootSourceOverrideTarget "
                               "%s; it allows %s)" % (self.address, self.system, device, target, ", ".join(sorted(allowed))))
        uri = http_boot_uri if device == "http" else None
        if uri and "HttpBootUri" not in (self._system.json.get("Boot") or {}):
            # Such BMCs (Dell iDRAC among them) take the URL from DHCP, which Nixie's proxy DHCP answers.
            self.warnings.append("Redfish BMC %s has no Boot.HttpBootUri: http_boot_uri is not sent, and the "
                                 "firmware takes the URL from DHCP" % self.address)
            uri = None
        return boot_override(device, True, REDFISH_MODES.get(redfish_mode), target, uri)

    def set_boot_once(self, request: dict) -> None:
        mode = MODES.get(request["mode"])
        # Enabled goes with every override, since Supermicro BMCs want it on every call (as Ironic found).
        self._call("cannot set a one-time boot from %s" % request["target"], self._system.set_system_boot_options,
                   target=sushy.BootSource(request["target"]), enabled=sushy.BootSourceOverrideEnabled.ONCE,
                   mode=sushy.BootSourceOverrideMode(mode) if mode else None, http_boot_uri=request["http_boot_uri"])

    def clear_boot_override(self) -> None:
        try:
            self._system.set_system_boot_options(enabled=sushy.BootSourceOverrideEnabled.DISABLED)
            if self.boot_override() is None:
                return
        except sushy_exceptions.SushyError:
            pass
        # BMCs whose override is always enabled (libvirt-backed ones, sushy-tools) refuse or ignore Disabled: there the
        # machine is set to boot its disk from now on, as Ironic sets a deployed node's boot device.
        self.warnings.append("Redfish BMC %s keeps its boot override enabled: the system boots its disk from now on "
                             "instead" % self.address)
        self._call("cannot set the boot device to the disk", self._system.set_system_boot_options,
                   target=sushy.BootSource.HDD, enabled=sushy.BootSourceOverrideEnabled.CONTINUOUS)

    def power_command(self, action: str) -> str:
        allowed = self._call("cannot read the reset types", self._system.get_allowed_reset_system_values)
        try:
            return choose_reset_type(action, {reset.value for reset in allowed})
        except RedfishError as exc:
            raise RedfishError("Redfish BMC %s: system %s: %s" % (self.address, self.system, exc)) from None

    def send_power(self, command: str) -> None:
        self._call("cannot reset the system (%s)" % command, self._system.reset_system, sushy.ResetType(command))

    def close(self) -> None:
        # Ending the Redfish session now, rather than whenever sushy's object is collected, frees one of the
        # BMC's few session slots at once.
        try:
            self._auth.close()
        except Exception:  # a BMC that is gone cannot end its session; nothing is left to do
            pass
