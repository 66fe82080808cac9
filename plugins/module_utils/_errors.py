# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's exception types.

Shared code raises these; a module turns them into ``fail_json`` and a controller plugin into
``AnsibleError``, so neither side needs to know how the other reports failure.
"""

from __future__ import annotations


class NixieError(Exception):
    """A failure the user can act on; ``details`` carries whatever partial result was gathered."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.details = details


class HostsFileError(NixieError):
    """hosts.json (or host variables) is not valid; the message names the file, host and field."""


class MalformedPacket(NixieError):
    """A datagram is not a well-formed DHCP message; the message says where."""
