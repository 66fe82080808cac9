# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every host's NixOS system for a run: evaluated in one ``nix eval``, realised in one ``nix build``.

Evaluating a NixOS configuration costs seconds of CPU and up to a gigabyte of memory. One evaluation on the
controller answers for all hosts of the run: their ``toplevel``, their ``diskoScript`` and the devices their disk
layout names (``config.disko.devices.disk.<name>.device``). One ``nix build`` of the evaluated derivations then
realises them all with Nix's own parallelism, and nixos-anywhere installs those store paths (``--store-paths``)
without evaluating anything itself.

A host whose configuration does not evaluate or build fails alone: one evaluation stops at the first error, so
after a failed one each host is evaluated on its own to tell which failed, with Nix's error for each; ``nix build
--keep-going`` builds what it can, and a host whose store paths are then missing failed.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, Iterable, Mapping, Optional

from ansible_collections.nixie.provision.plugins.module_utils._nix import (LOG_TAIL_LINES, LOOKUP_FUNCTION, Nix, attribute_path, check_flake_exists,
                                                                           log_progress, nix_error_text, nix_string)

# The parts of a host's system nixos-anywhere's --store-paths takes, under the names this module returns them by.
PARTS = (("toplevel", ("config", "system", "build", "toplevel")), ("disko_script", ("config", "system", "build", "diskoScript")))

_HOSTS_EXPRESSION = """root:
let
  %s
  disks = attribute:
    let layout = root.${attribute}.config.disko.devices.disk or null; in
    if builtins.isAttrs layout then builtins.mapAttrs (name: disk: disk.device or null) layout else null;
  system = attribute: root.${attribute}.config.nixpkgs.hostPlatform.system or null;
  host = attribute: { %s disks = disks attribute; system = system attribute; };
in
builtins.mapAttrs (name: host) { %%s }"""


def hosts_expression(attributes: Mapping[str, str]) -> str:
    """An ``--apply`` function mapping each host to ``{toplevel, disko_script, disks, system}`` of ``nixosConfigurations.<attribute>``.

    ``toplevel`` and ``disko_script`` are what ``lookup`` returns; ``disks`` maps each disk of the layout to its
    ``device`` (null where it has none), or is null for a configuration without a disko layout. ``system`` is the
    configuration's ``nixpkgs.hostPlatform.system`` (the installer it needs), null where it sets none.
    """
    parts = " ".join("%s = lookup root [ attribute %s ] [ ];" % (key, " ".join(nix_string(name) for name in path)) for key, path in PARTS)
    entries = " ".join("%s = %s;" % (nix_string(host), nix_string(attribute)) for host, attribute in attributes.items())
    return (_HOSTS_EXPRESSION % (LOOKUP_FUNCTION, parts)) % entries


def host_system(flake: str, host: str, attribute: str, found: Mapping[str, object]) -> Dict[str, object]:
    """One host's entry of :func:`evaluate` from its part of the evaluation's JSON."""
    system = {"attribute": attribute, "toplevel": None, "disko_script": None, "drvs": [], "disk_devices": None, "error": None,
              "system": found.get("system")}
    problems = []
    for key, path in PARTS:
        part = found[key]
        if "drv" in part:
            system[key] = part["out"]
            system["drvs"].append(part["drv"])
            continue
        where = attribute_path(["nixosConfigurations"] + part.get("missing", part.get("notDerivation", [])))
        if "missing" not in part:
            problems.append("%s in flake %s is not a derivation" % (where, flake))
        elif key == "disko_script" and where.endswith(".diskoScript"):
            problems.append("flake %s has no %s (does the configuration import disko's NixOS module, disko.nixosModules.disko?)" % (flake, where))
        elif "flake %s has no %s" % (flake, where) not in problems:
            # Both parts of a missing configuration stop at the same attribute.
            problems.append("flake %s has no %s" % (flake, where))
    disks = found["disks"]
    if disks is not None:
        unnamed = sorted(name for name, device in disks.items() if not isinstance(device, str) or not device)
        if unnamed:
            problems.append("nixosConfigurations.%s's disk layout names no device for %s"
                            % (attribute_path([attribute]), ", ".join("disko.devices.disk.%s" % attribute_path([name]) for name in unnamed)))
        system["disk_devices"] = dict(disks)
    elif system["disko_script"] is not None:
        problems.append("nixosConfigurations.%s has a diskoScript but no config.disko.devices.disk" % attribute_path([attribute]))
    if problems:
        system["error"] = "%s: %s" % (host, "; ".join(problems))
    return system


def evaluate(nix: Nix, flake: str, attributes: Mapping[str, str]) -> Dict[str, Dict[str, object]]:
    """``{host: system}`` for every host of ``attributes`` (``{host: nixosConfigurations attribute}``), in one ``nix eval``.

    A system is ``{attribute, toplevel, disko_script, drvs, disk_devices, error, system}``; ``error`` (Nix's own, or what is
    missing) is set when the host cannot be installed from this flake.
    """
    check_flake_exists(flake)
    if not attributes:
        return {}
    returncode, stdout, stderr = nix.run("eval", "--json", "%s#nixosConfigurations" % flake, "--apply", hosts_expression(attributes))
    if returncode == 0:
        found = json.loads(stdout)
        return dict((host, host_system(flake, host, attribute, found[host])) for host, attribute in attributes.items())
    if len(attributes) == 1:
        ((host, attribute),) = attributes.items()
        return {host: {"attribute": attribute, "toplevel": None, "disko_script": None, "drvs": [], "disk_devices": None, "system": None,
                       "error": "%s: evaluating %s#nixosConfigurations.%s failed:\n%s"
                                % (host, flake, attribute_path([attribute]), nix_error_text(stderr))}}
    # Only now, after the one evaluation failed, does each host cost an evaluation of its own.
    systems = {}
    for host, attribute in attributes.items():
        systems.update(evaluate(nix, flake, {host: attribute}))
    return systems


def build(nix: Nix, systems: Mapping[str, Mapping[str, object]], hosts: Iterable[str], log_path: str) -> Dict[str, Optional[str]]:
    """Realise the store paths of ``hosts`` (evaluated ``systems``) in one ``nix build``; ``{host: None, or why it failed}``.

    Nix's output goes to ``log_path``, with a line of Nixie's before and after (``tail -F`` it to watch the build).
    """
    hosts = [host for host in hosts if not systems[host]["error"]]
    drvs = sorted(set(drv for host in hosts for drv in systems[host]["drvs"]))
    if not drvs:
        return {}
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    # O_APPEND: nix writes to the same file between Nixie's progress lines.
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644), "w") as log:
        started = time.monotonic()
        log_progress(log, "nix build of %d derivations for %s" % (len(drvs), ", ".join(hosts)))
        # --keep-going: one host's failing build must not stop the others'.
        returncode, _stdout, _stderr = nix.run("build", "--no-link", "--keep-going", "--print-build-logs",
                                               *[nix.derivation_installable(drv) for drv in drvs], log=log)
        log_progress(log, "nix build %s after %.1f s" % ("finished" if returncode == 0 else "failed", time.monotonic() - started))
    with open(log_path, encoding="utf-8", errors="replace") as log:
        errors = nix_error_text(log.read(), LOG_TAIL_LINES)
    results = {}
    for host in hosts:
        missing = [systems[host][key] for key, _path in PARTS if not os.path.exists(systems[host][key])]
        results[host] = None if not missing else "%s: building %s failed; nix's errors:\n%s\nfull log: %s" % (
            host, " and ".join(missing), errors, log_path)
    return results
