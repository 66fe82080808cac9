# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Evaluating and building the user's flake with the ``nix`` command line.

Every call passes ``--extra-experimental-features 'nix-command flakes'`` itself, so Nixie works with a
stock ``nix.conf`` (Debian's ``nix-bin`` enables neither feature).

Attributes are located with ``nix eval --json <flake>#nixosConfigurations --apply <expression>``: one
evaluation answers for every attribute at once and, instead of failing on the first missing one, reports
how far each path got, so an error can name exactly what is missing. The installer is then realised by a
single ``nix build``; its JSON lists results in an order of Nix's choosing, so they are matched to the
evaluated derivations by ``drvPath``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from typing import IO, Iterable

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import INSTALLER_LOG_FILE, INSTALLER_STATE_FILE, IPXE_BINARIES, run_file
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._ipxe_dir import find_ipxe_binaries
from ansible_collections.nixie.provision.plugins.module_utils._process import CommandTimeout, run_with_deadline
from ansible_collections.nixie.provision.plugins.module_utils._rundir import RunDirError, make_run_dir

NIX_FEATURES = ["--extra-experimental-features", "nix-command flakes"]

NIX_INSTALL_HINT = (
    "install it with `apt install nix-bin` on Debian or Ubuntu, with the upstream installer "
    "(https://nixos.org/download), or run Ansible inside `nix develop` from the Nixie repository"
)

# Where Nix installations put `nix` that a non-login shell (such as Ansible's over SSH) may not have on PATH.
NIX_PROFILE_BINS = ("/run/current-system/sw/bin", "/nix/var/nix/profiles/default/bin", "~/.nix-profile/bin")

# The NixOS netboot artifacts the installer is made of (nixpkgs nixos/modules/installer/netboot/netboot.nix).
INSTALLER_ARTIFACTS = ("kernel", "netbootRamdisk", "toplevel")


CONFIGURATION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
LOG_TAIL_LINES = 20


class NixError(NixieError):
    """A nix call failed or gave something unusable; the message says what and where to look."""


class NixNotFound(NixError):
    """No ``nix`` executable."""


class FlakeNotFound(NixError):
    """A local flake directory has no flake.nix."""


class AttributeMissing(NixError):
    """The flake lacks attributes; ``details['missing']`` lists their dotted paths."""


class BuildFailed(NixError):
    """``nix build`` failed; ``details`` has ``log_path`` and ``log_tail``."""


def nix_string(value: str) -> str:
    """Quote ``value`` as a Nix string literal (``${`` must not start an interpolation)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return '"%s"' % escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def attribute_path(names: Iterable[str]) -> str:
    """Dotted attribute path as Nix reads it, quoting the names that are not plain identifiers."""
    return ".".join(name if re.match(r"^[A-Za-z_][A-Za-z0-9_'-]*$", name) else nix_string(name) for name in names)


def split_flake(flake: str, default_name: str = "installer") -> tuple[str, str]:
    """Split ``<flake>#<name>`` (the form nixos-anywhere and nixos-rebuild take) into the flake and the name."""
    reference, _hash, name = flake.partition("#")
    name = name or default_name
    if not reference:
        raise NixError("flake %r: the flake reference before '#' is empty" % flake)
    if not CONFIGURATION_NAME.match(name):
        raise NixError("flake %r: %r is not a nixosConfigurations name (letters, digits, '_', '.', '-')" % (flake, name))
    return reference, name


def local_flake_directory(reference: str) -> str | None:
    """The directory a local flake reference points at, or None for remote ones (github:, git+https:, ...)."""
    if reference.startswith("path:"):
        return reference[len("path:"):].split("?", 1)[0]
    if reference.startswith(("/", ".", "~")):
        return os.path.expanduser(reference)
    return None


def check_flake_exists(reference: str) -> None:
    directory = local_flake_directory(reference)
    if directory is not None and not os.path.isfile(os.path.join(directory, "flake.nix")):
        raise FlakeNotFound("flake %s not found: there is no %s" % (reference, os.path.join(os.path.abspath(directory), "flake.nix")))


def find_nix(nix: str = "nix") -> str:
    """The absolute path of the nix executable, searching PATH and then the usual Nix profile directories."""
    if os.sep in nix:
        if os.access(nix, os.X_OK):
            return nix
        raise NixNotFound("nix executable %s not found or not executable; %s" % (nix, NIX_INSTALL_HINT))
    search = os.pathsep.join([os.environ.get("PATH", os.defpath)] + [os.path.expanduser(d) for d in NIX_PROFILE_BINS])
    found = shutil.which(nix, path=search)
    if not found:
        raise NixNotFound("%s: command not found on PATH or in the Nix profiles; %s" % (nix, NIX_INSTALL_HINT))
    return found


def nix_error_text(stderr: str, limit: int = LOG_TAIL_LINES) -> str:
    """Nix's own error report: from the first ``error:`` line on, else the last lines of stderr."""
    lines = stderr.rstrip().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("error:"):
            return "\n".join(lines[index:index + limit])
    return "\n".join(lines[-limit:])


# ``lookup value path [ ]``: the derivation at ``path`` below ``value``, or how far the path got (see lookup_expression).
LOOKUP_FUNCTION = """lookup = value: path: seen:
    if path == [ ] then
      (if builtins.isAttrs value && value ? drvPath
       then { drv = value.drvPath; out = value.outPath; }
       else { notDerivation = seen; })
    else
      let name = builtins.head path; in
      if builtins.isAttrs value && builtins.hasAttr name value
      then lookup (builtins.getAttr name value) (builtins.tail path) (seen ++ [ name ])
      else { missing = seen ++ [ name ]; };"""

_LOOKUP_EXPRESSION = """root:
let
  %s
in
builtins.mapAttrs (key: path: lookup root path [ ]) { %%s }""" % LOOKUP_FUNCTION


def lookup_expression(paths: dict[str, list[str]]) -> str:
    """An ``--apply`` function mapping each key of ``paths`` to the derivation at its attribute path.

    Each result is ``{drv, out}``, ``{missing: [names up to the first missing one]}`` or ``{notDerivation: names}``.
    """
    entries = " ".join(
        "%s = [ %s ];" % (nix_string(key), " ".join(nix_string(name) for name in path)) for key, path in paths.items()
    )
    return _LOOKUP_EXPRESSION % entries


class Nix:
    """Runs ``nix`` with the flake features enabled and the user's extra arguments."""

    def __init__(self, executable: str = "nix", extra_args: Iterable[str] = (), timeout: float | None = None) -> None:
        """``timeout`` (seconds) bounds all calls made through this object together."""
        self.executable = find_nix(executable)
        self.extra_args = list(extra_args)
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self._version = None

    def command(self, subcommand: str, *args: str) -> list[str]:
        return [self.executable] + NIX_FEATURES + [subcommand] + self.extra_args + list(args)

    def version(self) -> tuple[int, ...]:
        """Nix's version as numbers, from ``nix --version`` ("nix (Nix) 2.8.0", "nix (Lix, like Nix) 2.91.1")."""
        if self._version is None:
            try:
                done = run_with_deadline([self.executable, "--version"], self._remaining())
            except CommandTimeout:
                raise NixError("%s --version did not finish within the timeout" % self.executable) from None
            found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?\s*$", done.stdout.strip())
            if done.returncode != 0 or not found:
                raise NixError("cannot tell the version of %s from %r" % (self.executable, done.stdout.strip() or done.stderr.strip()))
            self._version = tuple(int(part or 0) for part in found.groups())
        return self._version

    def derivation_installable(self, drv: str) -> str:
        """The installable that builds every output of the derivation file ``drv``.

        Nix 2.13 introduced ``<drv>^*``; later versions read a bare ``.drv`` path as the file itself, earlier ones reject ``^``.
        """
        return drv + "^*" if self.version() >= (2, 13) else drv

    def _remaining(self):
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.1)

    def run(self, subcommand: str, *args: str, log: IO[str] | None = None) -> tuple[int, str, str]:
        """Run nix; stderr goes to ``log`` (an open file) when given. Returns ``(returncode, stdout, stderr)``.

        nix runs in its own process group so a timeout also stops the builders it started.
        """
        command = self.command(subcommand, *args)
        try:
            done = run_with_deadline(command, self._remaining(), stderr=log or subprocess.PIPE)
        except CommandTimeout:
            raise NixError("nix %s did not finish within the timeout: %s" % (subcommand, " ".join(command)))
        return done.returncode, done.stdout, done.stderr or ""

    def locate(self, flake: str, attribute: str, paths: dict[str, list[str]]) -> dict[str, dict[str, str]]:
        """Evaluate ``<flake>#<attribute>`` with :func:`lookup_expression`; returns ``{key: {"drv", "out"}}``.

        Raises AttributeMissing naming every path (below ``attribute``) that does not lead to a derivation.
        """
        installable = "%s#%s" % (flake, attribute) if attribute else flake
        returncode, stdout, stderr = self.run("eval", "--json", installable, "--apply", lookup_expression(paths))
        if returncode != 0:
            if "does not provide attribute" in stderr:
                raise AttributeMissing("flake %s has no %s:\n%s" % (flake, attribute or "default package", nix_error_text(stderr)),
                                       missing=[attribute])
            raise NixError("evaluating %s failed:\n%s" % (installable, nix_error_text(stderr)))
        found = json.loads(stdout)
        missing, not_derivations = [], []
        for key in paths:
            for kind, collected in (("missing", missing), ("notDerivation", not_derivations)):
                if kind in found[key]:
                    path = attribute_path(_split_attribute(attribute) + found[key][kind])
                    # Several keys can stop at the same attribute (all three artifacts of a missing configuration).
                    if path not in collected:
                        collected.append(path)
        if missing or not_derivations:
            problems = ["flake %s has no %s" % (flake, path) for path in missing]
            problems += ["%s in flake %s is not a derivation" % (path, flake) for path in not_derivations]
            raise AttributeMissing("; ".join(problems), missing=missing + not_derivations)
        return found

    def build(self, installables: Iterable[str], log: IO[str]) -> dict[str, dict[str, str]] | None:
        """One ``nix build --no-link --json`` of all ``installables``; returns ``{drvPath: {output: path}}``."""
        returncode, stdout, _stderr = self.run("build", "--no-link", "--json", "--print-build-logs", *installables, log=log)
        if returncode != 0:
            return None
        return dict((result["drvPath"], result["outputs"]) for result in json.loads(stdout))


def _split_attribute(attribute):
    # The attributes this module passes are plain dotted names; quoting is only needed on the way back out.
    return attribute.split(".") if attribute else []


def toplevel_paths(nix: Nix, flake: str, hosts: Iterable[str]) -> dict[str, str]:
    """``{host: store path of nixosConfigurations.<host>.config.system.build.toplevel}`` for all hosts, in one evaluation.

    Nothing is built; the paths are what an installed host's ``/run/current-system`` resolves to.
    """
    check_flake_exists(flake)
    paths = dict((host, [host, "config", "system", "build", "toplevel"]) for host in hosts)
    found = nix.locate(flake, "nixosConfigurations", paths)
    return dict((host, found[host]["out"]) for host in hosts)


def _of_system(file_name: str, system: str | None) -> str:
    # installer-build.log of the run's own installer, installer-aarch64-linux-build.log of another system's.
    return file_name if system is None else file_name.replace("installer", "installer-" + system, 1)


class InstallerBuild:
    """Builds (or, in check mode, evaluates) the installer's netboot artifacts and reports what changed."""

    def __init__(self, nix: Nix, flake: str, run_dir: str, ipxe_dir: str | None = None, ipxe_installable: str | None = None,
                 check_mode: bool = False, system: str | None = None) -> None:
        """``system``: the Nix system of an installer besides the run's own, which gets log and state files of its own."""
        self.nix = nix
        self.reference, self.name = split_flake(flake)
        self.run_dir = run_dir
        self.ipxe_dir = ipxe_dir
        self.ipxe_installable = ipxe_installable
        self.check_mode = check_mode
        self.log_path = run_file(run_dir, _of_system(INSTALLER_LOG_FILE, system))
        self.state_path = run_file(run_dir, _of_system(INSTALLER_STATE_FILE, system))

    @property
    def configuration(self) -> str:
        return "%s#nixosConfigurations.%s" % (self.reference, attribute_path([self.name]))

    def artifact_installable(self, artifact: str) -> str:
        return "%s.config.system.build.%s" % (self.configuration, artifact)

    def run(self) -> dict[str, object]:
        check_flake_exists(self.reference)
        if self.ipxe_dir is not None:
            check_ipxe_dir(self.ipxe_dir, "ipxe_dir")
        derivations = self.evaluate()
        store_paths = dict((key, found["out"]) for key, found in derivations.items())
        previous = self.previous_store_paths()
        result = {"changed": store_paths != previous, "store_paths": store_paths, "log": self.log_path,
                  "diff": {"before": {"store_paths": previous or {}}, "after": {"store_paths": store_paths}}}
        if self.check_mode:
            # Nothing gets built; if an earlier run already realised these paths, report what it would return.
            if all(os.path.exists(path) for path in store_paths.values()):
                result.update(self.artifacts(store_paths))
            return result
        self.realise(derivations)
        result.update(self.artifacts(store_paths))
        self.save_store_paths(store_paths)
        return result

    def evaluate(self) -> dict[str, dict[str, str]]:
        paths = dict((artifact, [self.name, "config", "system", "build", artifact]) for artifact in INSTALLER_ARTIFACTS)
        try:
            derivations = self.nix.locate(self.reference, "nixosConfigurations", paths)
        except AttributeMissing as exc:
            if not any(path.endswith(".netbootRamdisk") for path in exc.details["missing"]):
                raise
            raise AttributeMissing('%s; does the configuration import (modulesPath + "/installer/netboot/netboot-minimal.nix")?' % exc,
                                   **exc.details) from None
        if self.ipxe_installable:
            flake, _hash, attribute = self.ipxe_installable.partition("#")
            derivations["ipxe"] = self.nix.locate(flake, attribute, {"ipxe": []})["ipxe"]
        return derivations

    def realise(self, derivations: dict[str, dict[str, str]]) -> None:
        installables = [self.artifact_installable(artifact) for artifact in INSTALLER_ARTIFACTS]
        if self.ipxe_installable:
            installables.append(self.ipxe_installable)
        try:
            make_run_dir(self.run_dir)
        except RunDirError as exc:
            raise NixError(str(exc)) from None
        # O_APPEND: nix writes to the same file between our progress lines.
        with os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644), "w") as log:
            started = time.monotonic()
            log_progress(log, "nix build of %s" % " ".join(installables))
            built = self.nix.build(installables, log)
            log_progress(log, "nix build %s after %.1f s" % ("failed" if built is None else "finished", time.monotonic() - started))
        if built is None:
            with open(self.log_path) as log:
                tail = log.read().splitlines()[-LOG_TAIL_LINES:]
            raise BuildFailed(
                "building the installer from %s failed; last %d lines of the log:\n%s\nfull log: %s"
                % (self.configuration, len(tail), "\n".join(tail), self.log_path),
                log_path=self.log_path, log_tail=tail,
            )
        for key, found in derivations.items():
            if found["out"] not in built.get(found["drv"], {}).values():
                raise NixError("nix build did not report %s (%s); see %s" % (key, found["out"], self.log_path))

    def artifacts(self, store_paths: dict[str, str]) -> dict[str, str | None]:
        """The boot artifacts inside the built store paths."""
        toplevel = store_paths["toplevel"]
        # <toplevel>/kernel links to the file system.boot.loader.kernelFile names in the kernel package
        # (bzImage on x86, Image on aarch64), so following it works on every platform.
        kernel = os.path.realpath(os.path.join(toplevel, "kernel"))
        initrd = os.path.join(store_paths["netbootRamdisk"], "initrd")
        init = os.path.join(toplevel, "init")
        params_file = os.path.join(toplevel, "kernel-params")
        for path, what in ((kernel, "the kernel (<toplevel>/kernel)"), (initrd, "the netboot initrd"), (init, "the init script"),
                           (params_file, "the kernel parameters")):
            if not os.path.isfile(path):
                raise NixError("%s is missing: %s does not exist; is %s a NixOS netboot configuration?" % (what, path, self.configuration))
        with open(params_file) as handle:
            params = handle.read().split()
        if self.ipxe_installable:
            ipxe_dir = check_ipxe_dir(store_paths["ipxe"], "ipxe_installable %s" % self.ipxe_installable)
        else:
            ipxe_dir = self.ipxe_dir
        return {"kernel": kernel, "initrd": initrd, "init": init, "cmdline": " ".join(["init=" + init] + params), "ipxe_dir": ipxe_dir}

    def previous_store_paths(self) -> dict[str, str] | None:
        try:
            with open(self.state_path) as handle:
                return json.load(handle).get("store_paths")
        except (OSError, ValueError, AttributeError):
            # No earlier run (or a state file that is not ours): everything counts as changed.
            return None

    def save_store_paths(self, store_paths: dict[str, str]) -> None:
        temporary = self.state_path + ".tmp"
        with open(temporary, "w") as handle:
            json.dump({"flake": self.configuration, "store_paths": store_paths}, handle, indent=2, sort_keys=True)
        os.replace(temporary, self.state_path)


def other_installers(installers: dict[str, str], systems: Iterable[str | None], own_system: str) -> dict[str, str]:
    """The installer flakes to build besides the run's own (of ``own_system``): one for each other system in ``systems``
    (the run's hosts' systems, None for a host that names none), from ``installers`` (system to flake)."""
    needed = sorted(set(system for system in systems if system and system != own_system))
    missing = [system for system in needed if system not in installers]
    if missing:
        raise NixError("installers: the run's hosts need an installer for %s; give its flake, such as "
                       "installers: {%s: ./fleet#installer-%s}" % (", ".join(missing), missing[0], missing[0].split("-")[0]))
    return dict((system, installers[system]) for system in needed)


def check_ipxe_dir(directory: str, what: str) -> str:
    if not os.path.isdir(directory):
        raise NixError("%s: %s is not a directory" % (what, directory))
    if not find_ipxe_binaries(directory):
        raise NixError("%s: %s has none of the iPXE binaries %s" % (what, directory, ", ".join(IPXE_BINARIES)))
    return directory


def log_progress(log: IO[str], message: str) -> None:
    # Ansible shows a module's output only when it returns, so `tail -F` on the log is how to watch a long build.
    log.write("nixie: %s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), message))
    log.flush()
