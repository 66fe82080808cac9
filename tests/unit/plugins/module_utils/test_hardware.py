"""module_utils/_hardware.py: the nixie_hardware facts of an agent's report, and the recap's line about them."""

from ansible_collections.nixie.provision.plugins.module_utils._hardware import hardware_facts, summary

GIB = 2 ** 30
# Shaped after the lab's VMs (q35, -smp 1, -m 1024: the power lab test's recap reads "1 core QEMU Virtual CPU version
# 2.5+, 954 MiB, QEMU Standard PC (Q35 + ICH9, 2009), 1 NIC, disk vda 2.0 GiB (hdd)"), with the provision test's data disk.
LAB_REPORT = {
    "macs": ["52:54:00:5e:00:01"], "ip": "10.213.0.50",
    "disks": [
        {"name": "vda", "size_bytes": 2 * GIB, "model": "", "has_partitions": False, "has_filesystem": False, "by_id": [],
         "by_path": ["pci-0000:00:03.0"], "serial": None, "wwn": None, "rotational": True},
        {"name": "vdb", "size_bytes": 128 * 2 ** 20, "model": "", "has_partitions": True, "has_filesystem": True,
         "by_id": ["virtio-nixie-data"], "by_path": ["pci-0000:00:04.0"], "serial": "nixie-data", "wwn": None, "rotational": True},
    ],
    "hardware": {"cpu": {"model": "QEMU Virtual CPU version 2.5+", "cores": 1, "threads": 1}, "memory_bytes": 954 * 2 ** 20 + 123456,
                 "dmi": {"vendor": "QEMU", "product": "Standard PC (Q35 + ICH9, 2009)", "serial": None},
                 "nics": [{"name": "eth0", "mac": "52:54:00:5e:00:01", "link": True, "speed_mbps": 1000, "driver": "e1000"}]},
}


def test_the_facts_keep_what_the_machine_told_and_null_for_the_rest():
    facts = hardware_facts(LAB_REPORT)
    assert facts["cpu"] == LAB_REPORT["hardware"]["cpu"] and facts["nics"] == LAB_REPORT["hardware"]["nics"]
    assert facts["disks"][1] == {"name": "vdb", "size_bytes": 128 * 2 ** 20, "model": None, "serial": "nixie-data", "wwn": None,
                                 "rotational": True, "by_id": ["virtio-nixie-data"], "by_path": ["pci-0000:00:04.0"]}
    assert "has_filesystem" not in facts["disks"][0]


def test_the_recap_line_of_a_lab_vm():
    assert summary(hardware_facts(LAB_REPORT)) == (
        "1 core QEMU Virtual CPU version 2.5+, 954 MiB, QEMU Standard PC (Q35 + ICH9, 2009), 1 NIC, disks vda 2.0 GiB (hdd), vdb 128 MiB (hdd)")


def test_an_older_agent_reports_no_hardware_and_nothing_is_guessed():
    report = {"disks": [{"name": "nvme0n1", "size_bytes": 512 * GIB, "model": "Samsung SSD 980", "has_partitions": False, "has_filesystem": False}]}
    facts = hardware_facts(report)
    assert facts["cpu"] == {"model": None, "cores": None, "threads": None} and facts["memory_bytes"] is None
    assert facts["dmi"] == {"vendor": None, "product": None, "serial": None} and facts["nics"] == []
    assert facts["disks"] == [{"name": "nvme0n1", "size_bytes": 512 * GIB, "model": "Samsung SSD 980", "serial": None, "wwn": None,
                               "rotational": None, "by_id": [], "by_path": []}]
    assert summary(facts) == "0 NICs, disk nvme0n1 512.0 GiB"


def test_threads_beside_cores_and_a_product_that_names_its_vendor():
    facts = hardware_facts({"disks": [], "hardware": {
        "cpu": {"model": "Intel(R) Xeon(R) E-2236 CPU @ 3.40GHz", "cores": 6, "threads": 12}, "memory_bytes": 64 * GIB,
        "dmi": {"vendor": "Supermicro", "product": "Supermicro SYS-5019C-M", "serial": "S123"}, "nics": [{}, {}]}})
    assert summary(facts) == "6 cores/12 threads Intel(R) Xeon(R) E-2236 CPU @ 3.40GHz, 64.0 GiB, Supermicro SYS-5019C-M, 2 NICs, no disk"
