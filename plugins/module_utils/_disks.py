# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which of a machine's disks may be written: its disk layout's devices resolved against its agent's report.

disko formats exactly the disks its layout names (``config.disko.devices.disk.<name>.device``). Each such device
must be one of the disks the agent reported, named as ``/dev/<name>``, ``/dev/disk/by-id/<link>`` or
``/dev/disk/by-path/<link>``; a name that matches none (``/dev/sda`` on an NVMe-only machine) refuses the host
before anything is written. A named disk holding partitions or a filesystem refuses it unless it may be wiped.
Disks the layout does not name are never written, so what they hold does not matter. Without a layout, every
reported disk counts as one that gets written.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

# How a layout may name a disk: the directory under /dev, and the field of the agent's report that lists its names there.
LINK_DIRECTORIES = (("/dev/disk/by-id/", "by_id"), ("/dev/disk/by-path/", "by_path"))


class UnsafeDisks(NixieError):
    """The host's disk layout names a disk it lacks, or one holding data that may not be wiped."""


def size_text(size_bytes: object) -> str:
    return "%.1f GiB" % ((size_bytes if isinstance(size_bytes, int) else 0) / 2.0 ** 30)


def is_blank(disk: Mapping[str, object]) -> bool:
    """Whether the agent said, in so many words, that ``disk`` holds neither partitions nor a filesystem."""
    return disk.get("has_partitions") is False and disk.get("has_filesystem") is False


def describe_disk(disk: Mapping[str, object]) -> str:
    """``sda (by-id ata-QEMU_HARDDISK_QM00001, 20.0 GiB, QEMU HARDDISK)``: enough to tell a machine's disks apart."""
    details = ["by-id %s" % link for link in (disk.get("by_id") or [])[:1]]
    details += [size_text(disk.get("size_bytes")), str(disk.get("model") or "unknown model")]
    return "%s (%s)" % (disk.get("name"), ", ".join(details))


def resolve(device: str, disks: List[Mapping[str, object]]) -> Optional[Mapping[str, object]]:
    """The reported disk ``device`` names, or None when none matches.

    Raises ValueError for a name that is not a whole disk's stable or kernel name (``/dev/disk/by-uuid/...``,
    ``/dev/mapper/...``): no report can say which disk that is.
    """
    for directory, field in LINK_DIRECTORIES:
        if device.startswith(directory):
            link = device[len(directory):]
            return next((disk for disk in disks if link in (disk.get(field) or [])), None)
    name = device[len("/dev/"):] if device.startswith("/dev/") else ""
    if not name or "/" in name:
        raise ValueError("%s is not a disk's /dev/<name>, /dev/disk/by-id/<link> or /dev/disk/by-path/<link>" % device)
    return next((disk for disk in disks if disk.get("name") == name), None)


def disks_to_write(name: str, disks: List[Mapping[str, object]], devices: Mapping[str, str]) -> Dict[str, Mapping[str, object]]:
    """``{device: reported disk}`` for every device of the layout ``devices`` (``{disk name: device}``); raise UnsafeDisks for one the machine lacks."""
    found, problems = {}, []
    for layout_name, device in sorted(devices.items()):
        try:
            disk = resolve(device, disks)
        except ValueError as exc:
            problems.append("disko.devices.disk.%s: %s" % (layout_name, exc))
            continue
        if disk is None:
            problems.append("its disk layout wants %s (disko.devices.disk.%s); this machine has %s"
                            % (device, layout_name, ", ".join(describe_disk(disk) for disk in disks)))
        else:
            found[device] = disk
    if problems:
        raise UnsafeDisks("refusing to install %s: %s; nothing was written" % (name, "; ".join(problems)), disks=list(disks))
    return found


def check_disks(name: str, disks: object, may_be_wiped: bool, devices: Optional[Mapping[str, str]] = None) -> None:
    """Raise UnsafeDisks unless every disk that gets written is known to be blank, or wiping was allowed for this host.

    The disks written are those the layout ``devices`` names, or every reported disk without a layout. A disk whose
    report does not say false for both has_partitions and has_filesystem (a field missing, null or not a boolean) is
    not known to be blank, and refuses like one holding data.
    """
    if not isinstance(disks, list) or not all(isinstance(disk, dict) for disk in disks):
        raise UnsafeDisks("refusing to install %s: its agent report's disks must be a list of objects, got %r" % (name, disks))
    if not disks:
        raise UnsafeDisks("refusing to install %s: its agent reported no disk to install to" % name)
    written = disks if devices is None else list(disks_to_write(name, disks, devices).values())
    if may_be_wiped:
        return
    holding = []
    for disk in written:
        if is_blank(disk):
            continue
        contents = [what for what, present in (("partitions", disk.get("has_partitions")), ("a filesystem", disk.get("has_filesystem")))
                    if present is True]
        holding.append("%s %s" % (describe_disk(disk), "holds %s" % " and ".join(contents) if contents else "is not known to be blank"))
    if holding:
        raise UnsafeDisks("refusing to install %s: %s; nothing was written. Set \"disks_may_be_wiped\": true for %s in hosts.json "
                          "(or nixie_disks_may_be_wiped for the host) to allow wiping" % (name, "; ".join(holding), name),
                          disks=disks)
