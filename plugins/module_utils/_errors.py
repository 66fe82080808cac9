# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's exception types.

Shared code raises these; a module turns them into ``fail_json`` and a controller plugin into
``AnsibleError``, so neither side needs to know how the other reports failure.
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import missing_required_lib


class NixieError(Exception):
    """A failure the user can act on; ``details`` carries whatever partial result was gathered."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class HostsFileError(NixieError):
    """hosts.json (or host variables) is not valid; the message names the file, host and field."""


class MalformedPacket(NixieError):
    """A datagram is not a well-formed DHCP message; the message says where."""


class MissingLibrary(NixieError):
    """A Python library did not import: ansible's own wording, and the import traceback as ``exception`` for ``fail_json``."""

    def __init__(self, name: str, import_error: str) -> None:
        super().__init__(missing_required_lib(name), exception=import_error)


def require_library(name: str, import_error: str | None) -> None:
    """Raise MissingLibrary when the import of ``name`` failed (``import_error`` is its traceback, None when it worked)."""
    if import_error:
        raise MissingLibrary(name, import_error)
