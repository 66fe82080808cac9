# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""hosts.json: the declarative list of machines Nixie provisions.

The file maps each host name (its ``nixosConfigurations`` attribute in the user's flake) to an object::

    {"nixie-01": {"mac_address": "bc:24:11:d0:28:34", "disks_may_be_wiped": true}}

This module validates it and turns each entry into the host variables every later step reads
(``nixie_mac`` and friends), so an INI or YAML inventory that sets the same variables is equivalent.
Every error names the file, the host and the field, and is raised only after the whole file was
read, listing every problem at once.
"""

from __future__ import annotations

import ipaddress
import json
import re

from ansible_collections.nixie.provision.plugins.module_utils._errors import HostsFileError
from ansible_collections.nixie.provision.plugins.module_utils._mac import unicast_mac
from ansible_collections.nixie.provision.plugins.module_utils._power import settings as power_settings

# Names become Ansible inventory host names and flake attribute paths: keep them to characters that
# are safe in both without quoting.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# Ansible's implicit names: a host called localhost would take over every delegate_to: localhost task (over SSH), one
# called all or ungrouped would shadow the groups.
RESERVED_NAMES = frozenset(("localhost", "localhost.localdomain", "all", "ungrouped"))
# A DNS name at most (RFC 1035): the installed system's host name defaults to it.
_NAME_MAX = 253
# Linux interface names are at most IFNAMSIZ - 1 = 15 bytes and cannot contain '/' or whitespace.
_INTERFACE = re.compile(r"^[^/\s]{1,15}$")


def _safe_name(value, what):
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError("%s %r must be letters, digits, '_', '.' or '-' (not starting with '.' or '-')" % (what, value))
    if len(value) > _NAME_MAX:
        raise ValueError("%s %r is longer than %d characters" % (what, value[:20] + "...", _NAME_MAX))
    return value


def host_name(value: object) -> str:
    """Return ``value`` if it is safe as an inventory host name, a flake attribute and a file name; else raise ValueError."""
    name = _safe_name(value, "host name")
    if name.lower() in RESERVED_NAMES:
        raise ValueError("host name %r is reserved by Ansible (%s); choose another name" % (name, ", ".join(sorted(RESERVED_NAMES))))
    return name


def _ip(value):
    if not isinstance(value, str):
        raise ValueError("must be an IPv4 or IPv6 address string")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError("%r is not an IPv4 or IPv6 address" % value) from None


def _interface(value):
    if not isinstance(value, str) or not _INTERFACE.match(value):
        raise ValueError("%r is not a network interface name (1-15 characters, no '/' or spaces)" % (value,))
    return value


def _bool(value):
    # JSON has real booleans; accepting "yes"/1 here would make a typo the reason a disk gets wiped.
    if not isinstance(value, bool):
        raise ValueError("must be true or false, got %s" % json.dumps(value))
    return value


def _port(value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError("must be a UDP port number from 1 to 65535, got %s" % json.dumps(value))
    return value


# JSON field -> (host variable, validator). The host variables are the contract with every later step.
FIELDS = {
    "mac_address": ("nixie_mac", unicast_mac),
    "ip": ("nixie_ip", _ip),
    "interface": ("nixie_interface", _interface),
    "flake_attr": ("nixie_flake_attr", lambda value: _safe_name(value, "flake attribute")),
    "disks_may_be_wiped": ("nixie_disks_may_be_wiped", _bool),
}
WOL_FIELDS = {
    "broadcast": ("nixie_wol_broadcast", _ip),
    "port": ("nixie_wol_port", _port),
}
REQUIRED = ("mac_address",)


def _reject_duplicate_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise HostsFileError("key %r appears twice in the same object; the second would silently replace the first" % key)
        seen[key] = value
    return seen


def _decode(text, source):
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except HostsFileError as exc:
        raise HostsFileError("%s: %s" % (source, exc)) from None
    except RecursionError:
        raise HostsFileError("%s: invalid JSON: nested too deeply" % source) from None
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        column = getattr(exc, "colno", None)
        where = " at line %s, column %s" % (line, column) if line else ""
        raise HostsFileError("%s: invalid JSON%s: %s" % (source, where, getattr(exc, "msg", exc))) from None


def _validate_entry(name, entry, problems):
    """Return the host variables for one entry, appending each problem found to ``problems``."""
    hostvars = {}
    if not isinstance(entry, dict):
        problems.append("host %r: must be an object such as {\"mac_address\": \"bc:24:11:d0:28:34\"}, got %s" % (name, json.dumps(entry)))
        return hostvars
    for field in REQUIRED:
        if field not in entry:
            problems.append("host %r: field %r is required" % (name, field))
    for field, value in entry.items():
        if field == "wol":
            hostvars.update(_validate_wol(name, value, problems))
            continue
        if field == "power":
            try:
                hostvars["nixie_power"] = power_settings.validate(value)
            except ValueError as exc:
                problems.append("host %r: field %s" % (name, exc))
            continue
        if field not in FIELDS:
            problems.append("host %r: unknown field %r (known: %s)" % (name, field, ", ".join(sorted(list(FIELDS) + ["power", "wol"]))))
            continue
        variable, validate = FIELDS[field]
        try:
            hostvars[variable] = validate(value)
        except ValueError as exc:
            problems.append("host %r: field %r: %s" % (name, field, exc))
    hostvars.setdefault("nixie_flake_attr", name)
    hostvars.setdefault("nixie_disks_may_be_wiped", False)
    hostvars.setdefault("nixie_power", dict(power_settings.DEFAULT))
    return hostvars


def _validate_wol(name, wol, problems):
    if not isinstance(wol, dict):
        problems.append("host %r: field 'wol' must be an object with 'broadcast' and/or 'port'" % name)
        return {}
    hostvars = {}
    for field, value in wol.items():
        if field not in WOL_FIELDS:
            problems.append("host %r: unknown field 'wol.%s' (known: %s)" % (name, field, ", ".join(sorted(WOL_FIELDS))))
            continue
        variable, validate = WOL_FIELDS[field]
        try:
            hostvars[variable] = validate(value)
        except ValueError as exc:
            problems.append("host %r: field 'wol.%s': %s" % (name, field, exc))
    return hostvars


def parse_hosts(text: str, source: str = "hosts.json") -> dict[str, dict[str, object]]:
    """Validate hosts.json text and return ``{host name: host variables}`` in file order.

    ``source`` names the file in error messages. Raises HostsFileError listing every problem.
    """
    document = _decode(text, source)
    if not isinstance(document, dict):
        raise HostsFileError("%s: the top level must be an object mapping host names to their settings" % source)
    problems = []
    hosts = {}
    owner_of_mac = {}
    for name, entry in document.items():
        try:
            host_name(name)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        hostvars = _validate_entry(name, entry, problems)
        mac = hostvars.get("nixie_mac")
        if mac in owner_of_mac:
            problems.append("host %r: mac_address %s is already used by host %r" % (name, mac, owner_of_mac[mac]))
        elif mac:
            owner_of_mac[mac] = name
        hosts[name] = hostvars
    if problems:
        raise HostsFileError("%s: %s" % (source, "; ".join(problems)), problems=problems)
    return hosts


def load_hosts(path: str) -> dict[str, dict[str, object]]:
    """Read and validate a hosts.json file (see parse_hosts)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise HostsFileError("%s: cannot read: %s" % (path, exc)) from None
    return parse_hosts(text, source=path)
