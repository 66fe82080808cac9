# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The iPXE binaries of a directory: what the installer module accepts is what the boot server serves."""

from __future__ import annotations

import os
from typing import Dict

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import IPXE_BINARIES


def find_ipxe_binaries(directory: str) -> Dict[str, str]:
    """Map each allow-listed name present in ``directory`` to its resolved path.

    Symbolic links are followed because distributions ship them (Debian's ``/usr/lib/ipxe/ipxe.efi`` points
    to ``/boot/ipxe.efi``; a Nix profile is all links): the directory is the operator's choice, and a
    request can only ever name one of ``IPXE_BINARIES``, so no other file is reachable through it.
    """
    found = {}
    for name in IPXE_BINARIES:
        path = os.path.realpath(os.path.join(directory, name))
        if os.path.isfile(path):
            found[name] = path
    return found
