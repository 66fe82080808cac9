# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's power settings (hosts.json's ``power``, host variable ``nixie_power``), checked once.

The inventory plugin checks them when it reads hosts.json, and the modules that take them (status) check them
again for any other inventory. Passwords are never part of them: they come from ``nixie_bmc_password`` (Ansible
Vault) or from the controller's environment variable that ``password_env`` names. Pure: the drivers, and the BMC
libraries they load, are ``connect``'s, so that reading an inventory never imports sushy or pyghmi.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Mapping, Optional
from urllib.parse import urlsplit

from ansible_collections.nixie.provision.plugins.module_utils._power.base import BOOT_MODES, PowerError

DRIVERS = ("wol", "redfish", "ipmi")
DEFAULT = {"driver": "wol"}
# Optional fields per driver (address and username are required for a BMC); Wake-on-LAN's own are hosts.json's "wol".
_BMC_FIELDS = {
    "redfish": ("address", "username", "password_env", "system", "port", "validate_certs", "ca_path", "boot_mode"),
    "ipmi": ("address", "username", "password_env", "port", "boot_mode"),
    "wol": (),
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError("must be a port number from 1 to 65535, got %r" % (value,))
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false, got %r" % (value,))
    return value


def _redfish_address(value: Any) -> str:
    address = _text(value)
    parts = urlsplit(address if "://" in address else "https://" + address)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError("%r is not a BMC URL such as https://10.0.0.21" % address)
    return address


def _system(value: Any) -> str:
    system = _text(value)
    if not system.startswith("/redfish/v1/Systems/"):
        raise ValueError("%r is not a Redfish system path such as /redfish/v1/Systems/1" % system)
    return system


def _env_name(value: Any) -> str:
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise ValueError("%r is not an environment variable name" % (value,))
    return value


def _boot_mode(value: Any) -> str:
    if value not in BOOT_MODES:
        raise ValueError("must be one of %s, got %r" % (", ".join(BOOT_MODES), value))
    return value


_VALIDATORS = {
    "username": _text, "password_env": _env_name, "system": _system, "port": _port, "validate_certs": _bool,
    "ca_path": _text, "boot_mode": _boot_mode,
}


def validate(value: Any) -> Dict[str, Any]:
    """The power settings ``value`` describes, normalised; ValueError naming the field (``power.address: ...``)."""
    if value is None:
        return dict(DEFAULT)
    if not isinstance(value, Mapping):
        raise ValueError("power: must be an object such as {\"driver\": \"redfish\", \"address\": \"https://10.0.0.21\", ...}")
    driver = value.get("driver", "wol")
    if driver not in DRIVERS:
        raise ValueError("power.driver: must be one of %s, got %r" % (", ".join(DRIVERS), driver))
    if "password" in value:
        raise ValueError("power.password: passwords never go into the inventory file; set nixie_bmc_password "
                         "(with Ansible Vault) or name an environment variable in power.password_env")
    allowed = _BMC_FIELDS[driver]
    settings = {"driver": driver}
    for field, field_value in value.items():
        if field == "driver":
            continue
        if field not in allowed:
            raise ValueError("power.%s: not a setting of the %s driver (it takes %s)" % (field, driver, ", ".join(allowed) or "none"))
        check = _redfish_address if (field, driver) == ("address", "redfish") else _VALIDATORS.get(field, _text)
        try:
            settings[field] = check(field_value)
        except ValueError as exc:
            raise ValueError("power.%s: %s" % (field, exc)) from None
    for field in ("address", "username"):
        if driver != "wol" and field not in settings:
            raise ValueError("power.%s: required for the %s driver" % (field, driver))
    return settings


def password(settings: Mapping[str, Any], given: Optional[str]) -> Optional[str]:
    """The BMC password: ``given`` (``nixie_bmc_password``), else the environment variable ``password_env`` names."""
    if settings["driver"] == "wol":
        return None
    if given:
        return given
    name = settings.get("password_env")
    if name:
        if not os.environ.get(name):
            raise PowerError("the BMC password of %s is to come from the environment variable %s, which is not set on "
                             "the controller" % (settings["address"], name))
        return os.environ[name]
    raise PowerError("no password for the BMC %s: set nixie_bmc_password (with Ansible Vault) or power.password_env"
                     % settings["address"])
