# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A machine's hardware as its agent reported it: the ``nixie_hardware`` facts, and the recap's one line about them.

The agent reads /sys and /proc only, and the boot server validated its report; what they did not tell is None here
too, and the line leaves it out rather than guess.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._disks import size_text

MIB = 2 ** 20

# Each disk's facts, from the report's disk fields: what the machine has, not what the safety check needs.
DISK_FACTS = ("name", "size_bytes", "model", "serial", "wwn", "rotational", "by_id", "by_path")


def hardware_facts(report: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``nixie_hardware`` facts of a phone-home report: cpu, memory_bytes, dmi, nics and disks.

    A report of an agent before hardware reports has no ``hardware``: its values are then all unknown.
    """
    hardware = report.get("hardware") or {}
    disks = []
    for disk in report.get("disks") or []:
        facts = {key: disk.get(key) for key in DISK_FACTS}
        # The report spells an unknown model "" (the safety check's messages print it); the facts say None.
        facts["model"] = facts["model"] or None
        facts["by_id"], facts["by_path"] = list(disk.get("by_id") or []), list(disk.get("by_path") or [])
        disks.append(facts)
    return {
        "cpu": dict({key: None for key in contract.CPU_FIELDS}, **(hardware.get("cpu") or {})),
        "memory_bytes": hardware.get("memory_bytes"),
        "dmi": dict({key: None for key in contract.DMI_FIELDS}, **(hardware.get("dmi") or {})),
        "nics": list(hardware.get("nics") or []),
        "disks": disks,
    }


def _size(size_bytes: int) -> str:
    # A data disk or an installer's memory under a GiB would read 0.1 or 0.9 GiB.
    return size_text(size_bytes) if size_bytes >= 1024 * MIB else "%d MiB" % (size_bytes // MIB)


def _plural(count: int, word: str) -> str:
    return "%d %s%s" % (count, word, "" if count == 1 else "s")


def _cpu_text(cpu: Mapping[str, Any]) -> Optional[str]:
    cores, threads, model = cpu.get("cores"), cpu.get("threads"), cpu.get("model")
    count = _plural(cores, "core") if cores else None
    if count and threads and threads != cores:
        count += "/%d threads" % threads
    text = " ".join(part for part in (count, model) if part)
    return text or None


def _machine_text(dmi: Mapping[str, Any]) -> Optional[str]:
    vendor, product = dmi.get("vendor"), dmi.get("product")
    if vendor and product and product.startswith(vendor):
        return product
    return " ".join(part for part in (vendor, product) if part) or None


def _disk_text(disk: Mapping[str, Any]) -> str:
    kind = {True: " (hdd)", False: " (ssd)"}.get(disk.get("rotational"), "")
    return "%s %s%s" % (disk["name"], _size(disk.get("size_bytes") or 0), kind)


def summary(facts: Mapping[str, Any]) -> str:
    """One short line: ``2 cores Intel(R) Xeon(R) ..., 2.0 GiB, QEMU Standard PC (Q35 + ICH9, 2009), 1 NIC, disk sda 20.0 GiB (ssd)``.

    ``rotational`` shows as hdd or ssd (virtio disks say rotational unless QEMU is told otherwise); what is unknown is left out.
    """
    memory = facts.get("memory_bytes")
    disks = facts.get("disks") or []
    parts = [
        _cpu_text(facts.get("cpu") or {}),
        _size(memory) if memory else None,
        _machine_text(facts.get("dmi") or {}),
        _plural(len(facts.get("nics") or []), "NIC"),
        ("disks " if len(disks) != 1 else "disk ") + ", ".join(_disk_text(disk) for disk in disks) if disks else "no disk",
    ]
    return ", ".join(part for part in parts if part)
