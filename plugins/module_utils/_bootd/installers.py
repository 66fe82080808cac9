# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The installers a run's hosts boot, one per Nix system (x86_64-linux, aarch64-linux), and which host gets which.

A run may hold x86 and arm64 hosts at once: each host names its system, and boots the installer built for it.
A host whose system has no installer is refused when the server starts, before anything powers it on: its
firmware would otherwise load a kernel it cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

DEFAULT_SYSTEM = "x86_64-linux"


class InstallerError(NixieError):
    """The run's installers do not fit its hosts: a host's system has none, or a system has two."""


@dataclass(frozen=True)
class Installer:
    """An installer: its kernel and initrd files, its kernel command line and the Nix system it boots."""

    kernel: str
    initrd: str
    cmdline: str
    system: str = DEFAULT_SYSTEM


def own_system(config: Mapping[str, Any]) -> str:
    """The Nix system of the server configuration's own installer (its top-level ``kernel``/``initrd``/``cmdline``)."""
    return config.get("system") or DEFAULT_SYSTEM


def installers_from_config(config: Mapping[str, Any]) -> Dict[str, Installer]:
    """The server configuration's installers by system: its ``kernel``/``initrd``/``cmdline`` (of ``system``) and
    those of ``installers``, a list of mappings with the same keys."""
    primary = {key: config[key] for key in ("kernel", "initrd", "cmdline")}
    found: Dict[str, Installer] = {}
    for entry in [dict(primary, system=own_system(config)), *config.get("installers", [])]:
        if entry["system"] in found:
            raise InstallerError("installers: two installers for %s; give one per system" % entry["system"])
        found[entry["system"]] = Installer(entry["kernel"], entry["initrd"], entry["cmdline"], entry["system"])
    return found


def check_host_systems(hosts: Iterable[Any], installers: Mapping[str, Installer]) -> None:
    """Refuse hosts (with ``name`` and ``system``, None meaning the default system) whose system has no installer."""
    missing = ["%s (%s)" % (host.name, host.system) for host in hosts
               if host.system is not None and host.system not in installers]
    if missing:
        raise InstallerError("hosts: no installer for the system of %s; installers were built for %s only: build one "
                             "for each system the run's hosts need" % (", ".join(missing), ", ".join(sorted(installers))))


def installer_for(host: Any, installers: Mapping[str, Installer], default_system: str) -> Installer:
    """The installer ``host`` boots: its own system's, or the default system's when it names none."""
    return installers[host.system or default_system]
