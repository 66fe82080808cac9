"""Command line of the lab: `python -m nixielab demo | teardown | build-installer` (as root).

demo             builds the test installer, creates a lab with a SeaBIOS machine woken by Wake-on-LAN and an OVMF
                 machine with a Redfish BMC, runs the collection's provision playbook in the controller namespace
                 (status, installer built by nix, boot server, power-on, netboot, phone-home, nixos-anywhere
                 stand-in, reboot, status), prints the status page's URL while it runs, shows the recap, the power
                 actions and boot steps, keeps the run's report, tears down.
teardown [--all] stops every process recorded under .lab/ by labs whose test run has died, deletes their
                 nxl-* namespaces and run directories: the way back to a clean machine after a killed
                 run. Labs of runs still going on are left alone unless --all is given.
build-installer  builds (or finds in .cache/lab-installer/) the test installer and prints its paths.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
import subprocess
import sys
import time

from .installer import build_installer
from .processes import NAMESPACE_PREFIX, REPO_ROOT, STATE_ROOT, LabError, ProcessTracker, stop_namespace_processes

# Named after the fixture flake's nixosConfigurations, as hosts.json names are after the user's flake.
# The OVMF machine has its disk first, as a UEFI machine has once its OS registered a boot entry: only its BMC's
# one-time network boot takes it to the boot server.
DEMO_MACHINES = (("nixie-01", "52:54:00:21:30:01", "bios", "e1000", "network-first", None),
                 ("nixie-02", "52:54:00:21:30:02", "uefi", "virtio-native", "disk-first", "redfish"))
# Where the demo keeps each run's report, outside the lab's own directory (removed with the lab).
DEMO_REPORTS = REPO_ROOT / ".cache" / "demo-reports"
FIRMWARE_NAMES = {("bios", "e1000"): "SeaBIOS + QEMU's iPXE ROM", ("uefi", "virtio-native"): "OVMF, EDK2's own PXE client"}


def build_installer_command() -> None:
    installer = build_installer()
    print("kernel %s\n  %s\ninitrd\n  %s\ncommand line\n  %s" % (installer.kernel_version, installer.kernel, installer.initrd, installer.cmdline))


def demo() -> None:
    """The main job in the lab: the collection's provision playbook takes two powered-off machines to installed NixOS
    hosts (status, installer build, boot server, Wake-on-LAN or BMC, netboot, phone-home, nixos-anywhere, reboot, status)."""
    from . import netboot  # pylint: disable=import-outside-toplevel
    from .net import LabNetwork  # pylint: disable=import-outside-toplevel

    print("== test installer")
    installer = build_installer()
    print("  %s, %s" % (installer.kernel, installer.initrd))
    with LabNetwork("demo") as lab:
        print("\n== lab %s: namespaces %s and %s, run directory %s" % (lab.tag, lab.ctl_ns, lab.lab_ns, lab.run_dir))
        for name, mac, firmware, nic, boot_order, bmc in DEMO_MACHINES:
            lab.add_machine(name, mac, firmware=firmware, nic=nic, boot_order=boot_order, bmc=bmc)
            print("  machine %-8s %s %s, %s, blank disk (off), powered by %s"
                  % (name, mac, FIRMWARE_NAMES[firmware, nic], boot_order, "its %s BMC" % bmc if bmc else "Wake-on-LAN"))
        power_daemon = lab.start_power_daemon()
        bmcs = lab.start_bmcs()
        print("  Redfish BMC (sushy-tools emulator) at %s, in the controller namespace only" % bmcs.redfish.url)
        run = netboot.with_stand_in(netboot.prepare(lab, installer, lab.machines, lab.run_dir / "provision"), installer)
        print("\n== ansible-playbook -i %s nixie.provision.provision (in %s)" % (run.inventory, lab.ctl_ns))
        print("   nixos-anywhere is the lab's recording stand-in (tests/lab/nixielab/files/nixos-anywhere): no real NixOS")
        print("   can be built here, so it writes a bootable disk whose system answers as the flake's NixOS host would.")
        started = time.monotonic()
        argv, environment = netboot.provision_command(lab, run)
        with subprocess.Popen(argv, env=environment, cwd=lab.run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as playbook:
            status_url, head = netboot.printed_status_url(playbook)
            if status_url is not None:
                print("   status page (live, from the controller namespace %s): %s" % (lab.ctl_ns, status_url), flush=True)
            output = head + playbook.communicate(timeout=1500)[0]
        print(output.strip())
        print("(%.1f s, exit %d)" % (time.monotonic() - started, playbook.returncode))
        print("\n== power")
        names = {machine.mac: machine.name for machine in lab.machines}
        for entry in power_daemon.packets():
            print("  %-8s magic packet via %s: %s" % (names.get(entry["mac"], entry["mac"]), entry["via"], entry["action"]))
        for entry in bmcs.events():
            if entry["event"] == "request":
                print("  %-8s %s BMC asked for %s" % (entry["machine"], entry["bmc"], entry["request"]))
            elif entry["event"] in ("start", "stop"):
                print("  %-8s QEMU %s (%s) %s" % (entry["machine"], entry["event"], entry["cause"], entry.get("boot_order", "")))
        print("\n== boot steps per machine (%s)" % (run.run_dir / "events.jsonl"))
        first = {}
        for event in run.events():
            if event["host"]:
                first.setdefault(event["mac"], event["ts"])
                print("  %-8s +%5.1f s  %s" % (event["host"], event["ts"] - first[event["mac"]], event["step"]))
        print("\n== nixos-anywhere calls")
        for record in run.stand_in_records():
            print("  " + " ".join(record["argv"][1:]))
        if (run.run_dir / "report.html").exists():
            kept = keep_report(run.run_dir, DEMO_REPORTS / lab.tag)
            print("\n== report: %s (and report.json beside it)" % kept)
        print("\n== tearing down lab %s" % lab.tag)
    print("done: no namespace or process of the demo is left")
    if playbook.returncode != 0:
        raise LabError("the provision playbook failed (exit %d)" % playbook.returncode)


def keep_report(run_dir: Path, directory: Path) -> Path:
    """Copy the run's report and the install logs it links to into `directory` (the lab's run directory goes with
    the lab); return the HTML report's new path."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("report.html", "report.json"):
        shutil.copy2(run_dir / name, directory / name)
    for log in run_dir.glob("*/install.log"):
        (directory / log.parent.name).mkdir(exist_ok=True)
        shutil.copy2(log, directory / log.parent.name / log.name)
    return directory / "report.html"


def teardown(everything: bool = False) -> None:
    """Stop what labs left behind: by default only labs whose owner (the test run that made them) has died."""
    namespaces = [line.split()[0] for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.splitlines()]
    for run_dir in sorted(path for path in STATE_ROOT.glob("*") if path.is_dir()):
        tracker = ProcessTracker(run_dir / "pids")
        owner = tracker.live_owner()
        own_namespaces = [name for name in namespaces if name.startswith("%s%s-" % (NAMESPACE_PREFIX, run_dir.name))]
        if owner is not None and not everything:
            print("skipped lab %s: its owner, process %d, still runs (--all stops it too)" % (run_dir.name, owner))
            namespaces = [name for name in namespaces if name not in own_namespaces]
            continue
        for stopped in tracker.stop_all():
            print("stopped %s (lab %s)" % (stopped, run_dir.name))
        shutil.rmtree(run_dir)
        print("removed %s" % run_dir)
    for namespace in (name for name in namespaces if name.startswith(NAMESPACE_PREFIX)):
        for pid in stop_namespace_processes(namespace):
            print("stopped process %d left in %s" % (pid, namespace))
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        print("deleted namespace %s" % namespace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nixielab", description=__doc__.split("\n", maxsplit=1)[0],
                                     epilog=__doc__.split("\n\n", maxsplit=1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("demo", "teardown", "build-installer"))
    parser.add_argument("--all", action="store_true", help="teardown: also labs of test runs still going on")
    args = parser.parse_args(argv)
    command = args.command
    try:
        if command == "teardown":
            teardown(everything=args.all)
        else:
            {"demo": demo, "build-installer": build_installer_command}[command]()
    except LabError as error:
        print("nixielab %s: %s" % (command, error), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nixielab %s: interrupted (what it had started is stopped)" % command, file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
