"""P7: the controller's Nix cost of a provisioning run, for 1, 5 and 20 hosts of the fixture flake.

Nixie: what the provision role runs on the controller, `nixie.provision.systems`' one evaluation of every host and one
build of their systems (module_utils/_systems.py); the status checks and nixos-anywhere (`--store-paths`) evaluate
nothing. Reference, the flow before it (and what running nixos-anywhere with `--flake` per host does): for each host,
in parallel as Ansible's forks run them (forks = the number of hosts), nixos-anywhere's two `nix build`s of the
flake's diskoScript and toplevel, then the status check's evaluation of the toplevel (module_utils/_nix.toplevel_paths
of one host). Every nix call goes through a metering wrapper (bench/bin/nix) that logs its arguments, times and peak
RSS. The hosts' outputs are deleted from the store before each measurement, so both sides build them.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from ansible_collections.nixie.provision.plugins.module_utils import _nix, _systems

BENCH_DIR = Path(__file__).resolve().parent
METER = BENCH_DIR / "bin" / "nix"
FIXTURE = BENCH_DIR.parent / "tests" / "fixtures" / "flake-installer" / "prepare.py"
MIB = 1 << 20


def _prepare_module():
    spec = importlib.util.spec_from_file_location("flake_installer_prepare", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluates(argv: list[str]) -> bool:
    """Whether a nix call evaluates Nix code: `nix eval`, or a build of a flake installable (not of .drv files)."""
    words = [word for word in argv if not word.startswith("-")]
    subcommand = next((word for word in words if word in ("eval", "build")), None)
    return subcommand == "eval" or (subcommand == "build" and any("#" in word for word in words))


def peak_concurrent_rss(calls: list[dict]) -> float:
    """The largest sum of peak RSS (bytes) of the nix processes that ran at the same time (each at its own peak: an upper bound)."""
    peak = 0
    for call in calls:
        peak = max(peak, sum(other["maxrss_kib"] for other in calls if other["start"] <= call["start"] < other["end"]) * 1024)
    return peak


class Meter:
    """nix calls through bench/bin/nix, logged to one file per measurement."""

    def __init__(self, workdir: Path, environment: dict):
        self.log = workdir / "nix-calls.jsonl"
        self.environment = dict(environment, NIXIE_BENCH_REAL_NIX=shutil.which("nix"), NIXIE_BENCH_NIX_LOG=str(self.log))

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def reset(self):
        self.log.unlink(missing_ok=True)


def _nixie(flake, hosts, workdir):
    nix = _nix.Nix(str(METER))
    systems = _systems.evaluate(nix, flake, {host: host for host in hosts})
    built = _systems.build(nix, systems, hosts, str(workdir / "systems-build.log"))
    failed = [host for host in hosts if systems[host]["error"] or built.get(host)]
    if failed:
        raise RuntimeError("P7: Nixie's evaluation or build failed for %s: %s" % (", ".join(failed), systems[failed[0]]["error"] or built[failed[0]]))


def _reference_host(flake, host):
    nix = _nix.Nix(str(METER))
    for attribute in ("diskoScript", "toplevel"):
        # As nixos-anywhere runs it for --flake: one nix build, with its own evaluation, per attribute (it asks for
        # --print-out-paths, which Debian 12's nix 2.8 lacks; --json prints the same paths).
        returncode, _stdout, stderr = nix.run("build", "--json", "--no-link", "%s#nixosConfigurations.%s.config.system.build.%s" % (flake, host, attribute))
        if returncode != 0:
            raise RuntimeError("P7: the reference build of %s.%s failed: %s" % (host, attribute, stderr[-500:]))
    _nix.toplevel_paths(nix, flake, [host])


def _reference(flake, hosts, _workdir):
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        for done in [pool.submit(_reference_host, flake, host) for host in hosts]:
            done.result()


def _forget_outputs(flake, hosts, environment):
    """Delete the hosts' toplevels and disko scripts from the store, so that the next measurement builds them."""
    systems = _systems.evaluate(_nix.Nix(), flake, {host: host for host in hosts})
    paths = [systems[host][key] for host in hosts for key in ("toplevel", "disko_script") if os.path.exists(systems[host][key])]
    if paths:
        subprocess.run(["nix", "--extra-experimental-features", "nix-command", "store", "delete", *paths], env=environment,
                       capture_output=True, check=True)


def measure(sizes, repetitions, workdir: Path, log, row_class, alternate):
    prepare = _prepare_module()
    flake = prepare.materialise(workdir / "flake", b"bench kernel", b"bench initrd")
    environment = dict(os.environ, **prepare.offline_nix_env(workdir / "nix-conf"))
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        meter = Meter(workdir, environment)
        os.environ.update(meter.environment)
        rows = []
        for size in sizes:
            hosts = ["fleet-%02d" % number for number in range(1, size + 1)]

            def run(side):
                _forget_outputs(flake, hosts, environment)
                meter.reset()
                started = time.monotonic()
                side(flake, hosts, workdir)
                seconds = time.monotonic() - started
                calls = meter.calls()
                return sum(1 for call in calls if evaluates(call["argv"])), seconds, peak_concurrent_rss(calls), len(calls)

            nixie_runs, reference_runs = alternate(repetitions, lambda: run(_nixie), lambda: run(_reference))
            log("P7 %d hosts: nixie %s, reference %s" % (size, nixie_runs, reference_runs))
            nixie_run, reference_run = (sorted(runs, key=lambda item: item[1])[len(runs) // 2] for runs in (nixie_runs, reference_runs))
            label = "%d host%s" % (size, "" if size == 1 else "s")
            rows += [row_class("P7", "%s: nix evaluations per host" % label, nixie_run[0] / size, reference_run[0] / size, "evaluations",
                               "lower", "1 for the run", nixie_run[0] == 1),
                     row_class("P7", "%s: nix wall time" % label, nixie_run[1], reference_run[1], "s"),
                     row_class("P7", "%s: nix peak RSS, processes at once summed" % label, nixie_run[2] / MIB, reference_run[2] / MIB, "MiB")]
        return rows
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
