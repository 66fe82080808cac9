"""Command line of the lab: `python -m nixielab demo | teardown | build-installer` (as root).

demo             builds the test installer, creates a lab with a SeaBIOS and an OVMF machine, powers
                 them on by running the collection's wake module through ansible-playbook in the
                 controller namespace, shows each firmware's PXE DHCPDISCOVER, and tears everything down.
teardown [--all] stops every process recorded under .lab/ by labs whose test run has died, deletes their
                 nxl-* namespaces and run directories: the way back to a clean machine after a killed
                 run. Labs of runs still going on are left alone unless --all is given.
build-installer  builds (or finds in .cache/lab-installer/) the test installer and prints its paths.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

from .installer import build_installer
from .processes import NAMESPACE_PREFIX, STATE_ROOT, LabError, ProcessTracker, start_time, stop_pid

DEMO_MACHINES = (("bios1", "52:54:00:21:30:01", "bios"), ("uefi1", "52:54:00:21:30:02", "uefi"))
DISCOVER_TIMEOUT = 60


def build_installer_command() -> None:
    installer = build_installer()
    print("kernel %s\n  %s\ninitrd\n  %s\ncommand line\n  %s" % (installer.kernel_version, installer.kernel, installer.initrd, installer.cmdline))


def demo() -> None:
    # Imported here: scapy (behind capture) takes a second to load, which teardown should not pay.
    from .capture import Capture, client_arch, vendor_class  # pylint: disable=import-outside-toplevel
    from .net import LabNetwork  # pylint: disable=import-outside-toplevel
    from .playbook import WAKE_PLAYBOOK, run_playbook, write_inventory  # pylint: disable=import-outside-toplevel

    print("== test installer")
    build_installer_command()
    with LabNetwork("demo") as lab:
        print("\n== lab %s: namespaces %s and %s, run directory %s" % (lab.tag, lab.ctl_ns, lab.lab_ns, lab.run_dir))
        for name, mac, firmware in DEMO_MACHINES:
            lab.add_machine(name, mac, firmware=firmware)
            print("  machine %-6s %s %s (off)" % (name, mac, "SeaBIOS + iPXE ROM" if firmware == "bios" else "OVMF"))
        power = lab.start_power_daemon()
        inventory = write_inventory(lab.run_dir, lab.machines)
        with Capture(lab) as capture:
            print("\n== ansible-playbook -i %s %s (in %s)" % (inventory.name, WAKE_PLAYBOOK.name, lab.ctl_ns))
            started = time.monotonic()
            print(run_playbook(lab, WAKE_PLAYBOOK, inventory).stdout.strip())
            print("(%.1f s)" % (time.monotonic() - started))
            print("\n== power daemon log")
            for packet in power.packets():
                print("  %(via)s from %(source)s to %(destination)s: magic packet for %(mac)s -> %(action)s" % packet)
            print("\n== firmware network boot, seen on %s" % lab.bridge)
            for machine in lab.machines:
                discovers = capture.wait_for(lambda machine=machine: capture.pxe_discovers(machine.mac), DISCOVER_TIMEOUT,
                                             "PXE DHCPDISCOVER from %s" % machine.name)
                powered_on = next(packet["time"] for packet in power.packets(machine.mac) if packet["action"] == "started")
                print("  %-6s DHCPDISCOVER %4.1f s after power-on: option 93 (arch) %d, option 60 %s"
                      % (machine.name, float(discovers[0].time) - powered_on, client_arch(discovers[0]), vendor_class(discovers[0]).decode()))
        print("\n== tearing down lab %s" % lab.tag)
    print("done: no namespace or process of the demo is left")


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
    for namespace in (name for name in namespaces if name.startswith(NAMESPACE_PREFIX)):
        # A process the records missed (its lab was killed mid-start) would keep the namespace alive.
        for pid in map(int, subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False).stdout.split()):
            started = start_time(pid)
            if started is not None:
                stop_pid(pid, started)
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
