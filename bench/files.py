"""The files both sides serve: made once per run under the work directory, identical for Nixie and the reference."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

IPXE_DIR = Path("/usr/lib/ipxe")


@dataclasses.dataclass(frozen=True)
class Files:
    kernel: Path
    initrd: Path
    cmdline: str
    ipxe_dir: Path


def blob(path, size):
    """A file of ``size`` random bytes (random: nothing on the way may compress it), made once."""
    path = Path(path)
    if not path.exists() or path.stat().st_size != size:
        with open(path, "wb") as handle:
            remaining = size
            while remaining:
                chunk = min(remaining, 1 << 20)
                handle.write(os.urandom(chunk))
                remaining -= chunk
    return path


def synthetic(workdir, initrd_size, kernel_size=8 << 20, ipxe_efi_size=None):
    """Stand-in kernel and initrd of the given sizes; the real undionly.kpxe, and ipxe.efi real or of ``ipxe_efi_size``."""
    workdir = Path(workdir)
    ipxe_dir = workdir / ("ipxe-%s" % (ipxe_efi_size or "real"))
    if not ipxe_dir.exists():
        ipxe_dir.mkdir(parents=True)
        shutil.copyfile(IPXE_DIR / "undionly.kpxe", ipxe_dir / "undionly.kpxe")
        if ipxe_efi_size:
            blob(ipxe_dir / "ipxe.efi", ipxe_efi_size)
        else:
            shutil.copyfile(IPXE_DIR / "ipxe.efi", ipxe_dir / "ipxe.efi")
    return Files(kernel=blob(workdir / ("kernel-%d" % kernel_size), kernel_size),
                 initrd=blob(workdir / ("initrd-%d" % initrd_size), initrd_size), cmdline="console=ttyS0", ipxe_dir=ipxe_dir)
