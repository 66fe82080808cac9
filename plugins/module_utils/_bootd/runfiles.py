# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run directory's secrets: files only their owner may read, replaced whole.

The controller secret authenticates the controller to the boot server's controller routes. A server writes
a fresh one at every start; the controller on the same machine reads it from here (``read_controller_secret``,
through ``_bootclient.connect``), and one on another host is given it as the modules' ``server_secret``.

The status page's secret is derived from it (``status_secret``): it opens the page, its event stream and the install
logs, and nothing else. The playbook prints it in the page's URL, so whoever reads the job's output (an AWX job log)
can watch the run but cannot drive it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from typing import Optional

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract

# 256 random bits, as 43 URL-safe characters: a header value without quoting.
CONTROLLER_SECRET_BYTES = 32


def status_secret(controller_secret: str) -> str:
    """The status page's secret for a run whose controller secret is ``controller_secret``: one-way, so the page's
    URL in a job log gives no way to the controller's routes."""
    digest = hmac.new(controller_secret.encode("ascii"), b"nixie status page", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def write_private(path: str, text: str) -> None:
    """Replace the file at ``path`` with ``text``, readable by its owner alone (mode 0600)."""
    scratch = path + ".new"
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    # A rename, so that a server killed mid-write leaves the previous file rather than half of one.
    os.replace(scratch, path)


def create_controller_secret(run_dir: str) -> str:
    """Make this start's controller secret, keep it in ``run_dir`` and return it."""
    secret = secrets.token_urlsafe(CONTROLLER_SECRET_BYTES)
    write_private(contract.run_file(run_dir, contract.CONTROLLER_SECRET_FILE), secret)
    return secret


def read_controller_secret(run_dir: str) -> Optional[str]:
    """The controller secret of the server that last started in ``run_dir``, or None when none did (or it is unreadable)."""
    try:
        with open(contract.run_file(run_dir, contract.CONTROLLER_SECRET_FILE), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None
