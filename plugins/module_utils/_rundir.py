# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run directory on the controller, created by whichever module writes to it first."""

from __future__ import annotations

import os

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError


class RunDirError(NixieError):
    """The run directory (or a host's directory in it) cannot be created."""


def make_run_dir(path: str) -> str:
    """Create ``path`` and its parents, private to this user, and return it; raise RunDirError naming ``run_dir``.

    A read-only or missing mount, a file in the way or a directory of another user would otherwise surface as a raw
    OSError traceback from deep inside the module.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise RunDirError("run_dir: cannot create %s: %s" % (path, exc.strerror or exc)) from None
    return path
