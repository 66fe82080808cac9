"""module_utils/_disks.py: a disk layout's devices resolved against the agent's report, and which disks may be written."""

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._disks import UnsafeDisks, check_disks, resolve

GIB = 2 ** 30
SYSTEM = {"name": "sda", "size_bytes": 20 * GIB, "model": "QEMU HARDDISK", "has_partitions": False, "has_filesystem": False,
          "by_id": ["ata-QEMU_HARDDISK_QM00001", "wwn-0x5000c500a1b2c3d4"], "by_path": ["pci-0000:00:1f.2-ata-1.0"]}
DATA = {"name": "nvme0n1", "size_bytes": 512 * GIB, "model": "Samsung SSD 980", "has_partitions": True, "has_filesystem": True,
        "by_id": ["nvme-Samsung_SSD_980_1TB_S64ANS0T"], "by_path": ["pci-0000:01:00.0-nvme-1"]}
DISKS = [SYSTEM, DATA]


@pytest.mark.parametrize("device, expected", [
    ("/dev/sda", SYSTEM),
    ("/dev/nvme0n1", DATA),
    ("/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001", SYSTEM),
    ("/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", SYSTEM),
    ("/dev/disk/by-path/pci-0000:01:00.0-nvme-1", DATA),
    ("/dev/sdb", None),
    ("/dev/disk/by-id/ata-QEMU_HARDDISK_QM00002", None),
    # A link name is not a kernel name, nor the other way round.
    ("/dev/disk/by-id/sda", None),
    ("/dev/disk/by-path/ata-QEMU_HARDDISK_QM00001", None),
])
def test_resolve(device, expected):
    assert resolve(device, DISKS) is expected


@pytest.mark.parametrize("device", ["/dev/disk/by-uuid/1234", "/dev/mapper/root", "sda", "/dev/", "/dev/disk/by-id"])
def test_resolve_refuses_names_no_report_can_match(device):
    with pytest.raises(ValueError, match="is not a disk's /dev/<name>, /dev/disk/by-id/<link> or /dev/disk/by-path/<link>"):
        resolve(device, DISKS)


def test_a_filled_disk_the_layout_does_not_name_does_not_matter():
    check_disks("db", DISKS, False, {"main": "/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001"})


def test_a_named_disk_holding_data_refuses_unless_it_may_be_wiped():
    with pytest.raises(UnsafeDisks) as caught:
        check_disks("db", DISKS, False, {"main": "/dev/sda", "data": "/dev/disk/by-path/pci-0000:01:00.0-nvme-1"})
    assert str(caught.value).startswith(
        "refusing to install db: nvme0n1 (by-id nvme-Samsung_SSD_980_1TB_S64ANS0T, 512.0 GiB, Samsung SSD 980) holds partitions and a filesystem;"
        " nothing was written. Set \"disks_may_be_wiped\": true for db")
    check_disks("db", DISKS, True, {"main": "/dev/sda", "data": "/dev/disk/by-path/pci-0000:01:00.0-nvme-1"})


def test_a_missing_disk_refuses_even_when_wiping_is_allowed():
    for may_be_wiped in (False, True):
        with pytest.raises(UnsafeDisks) as caught:
            check_disks("db", [SYSTEM], may_be_wiped, {"main": "/dev/nvme0n1"})
        assert str(caught.value) == ("refusing to install db: its disk layout wants /dev/nvme0n1 (disko.devices.disk.main); this machine has "
                                     "sda (by-id ata-QEMU_HARDDISK_QM00001, 20.0 GiB, QEMU HARDDISK); nothing was written")


def test_every_problem_of_the_layout_is_named_at_once():
    with pytest.raises(UnsafeDisks) as caught:
        check_disks("db", DISKS, True, {"a": "/dev/disk/by-uuid/1234", "b": "/dev/vdz"})
    message = str(caught.value)
    assert "disko.devices.disk.a: /dev/disk/by-uuid/1234 is not a disk's" in message
    assert "wants /dev/vdz (disko.devices.disk.b)" in message


@pytest.mark.parametrize("missing", ["has_partitions", "has_filesystem"])
def test_a_named_disk_the_report_does_not_describe_fully_counts_as_holding_data(missing):
    disk = dict(SYSTEM)
    del disk[missing]
    with pytest.raises(UnsafeDisks, match=r"sda \(by-id ata-QEMU_HARDDISK_QM00001, 20.0 GiB, QEMU HARDDISK\) is not known to be blank"):
        check_disks("db", [disk, DATA], False, {"main": "/dev/sda"})


def test_without_a_layout_every_disk_counts():
    with pytest.raises(UnsafeDisks, match="nvme0n1 .* holds partitions and a filesystem"):
        check_disks("db", DISKS, False)
    check_disks("db", [SYSTEM], False)


@pytest.mark.parametrize("disks, words", [([], "reported no disk to install to"), ("sda", "must be a list of objects"),
                                          ([SYSTEM, "sdb"], "must be a list of objects")])
def test_unusable_reports_refuse(disks, words):
    with pytest.raises(UnsafeDisks, match=words):
        check_disks("db", disks, True, {"main": "/dev/sda"})
