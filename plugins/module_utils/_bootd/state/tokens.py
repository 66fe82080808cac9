# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One-time agent tokens: the only thing that lets an installer's agent talk to the boot server.

A token is minted when a host's iPXE script is served and travels to the installer on its kernel
command line. The first phone-home that presents it *and* reports the host's MAC claims it; from then
on it is bound to that MAC and to the source address of the claim, so a token copied off the wire or
off the console cannot be replayed from another machine. Bookkeeping, like Ironic's agent token (handed
out once, required on every later call).

Outstanding tokens (minted, not yet claimed) are the one thing a killed boot server must not forget: an
installer that booted with one keeps presenting it, and nothing but a power cycle gives it another. The
store reports each change of them to a ``journal`` (the server keeps them in its run directory), and
a server restarted on that run directory adopts them.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
from typing import Callable, Dict, Mapping, Optional, Sequence, Union

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

# secrets.token_urlsafe(32) gives 256 random bits as 43 characters from [A-Za-z0-9_-]: safe on a
# kernel command line and in an iPXE script without quoting.
TOKEN_BYTES = 32


class TokenRefused(NixieError):
    """A token is not accepted; ``mac`` names the host it was issued for when that is known.

    The reason is for the event log only: clients get a bare 403, whatever the reason.
    """

    def __init__(self, reason: str, mac: Optional[str] = None) -> None:
        super().__init__(reason, mac=mac)
        self.mac = mac


class _Grant:
    __slots__ = ("token", "mac", "bound_ip")

    def __init__(self, token: str, mac: str) -> None:
        self.token = token.encode("ascii")
        self.mac = mac
        self.bound_ip = None


def _as_bytes(token):
    # hmac.compare_digest refuses non-ASCII str with TypeError; a forged token must be refused, not crash.
    if isinstance(token, bytes):
        return token
    if isinstance(token, str):
        return token.encode("utf-8", "surrogatepass")
    return b""


class TokenStore:
    """Per-host tokens keyed by normalized MAC (lower case, colons); thread-safe."""

    def __init__(self, token_bytes: int = TOKEN_BYTES, journal: Optional[Callable[[Dict[str, str]], None]] = None) -> None:
        """``journal``, if given, is called with ``outstanding()`` after every change of it, under the lock."""
        if token_bytes < 16:
            raise ValueError("agent tokens need at least 128 bits")
        self._token_bytes = token_bytes
        self._journal = journal
        self._grants = {}
        self._lock = threading.Lock()

    def mint(self, mac: str) -> str:
        """Return a fresh token for ``mac``; any earlier token of that MAC stops working."""
        token = secrets.token_urlsafe(self._token_bytes)
        with self._lock:
            self._grants[mac] = _Grant(token, mac)
            self._journal_changes()
        return token

    def adopt(self, outstanding: Mapping[str, str]) -> None:
        """Accept the unclaimed ``{mac: token}`` an earlier server handed out, as if minted here."""
        with self._lock:
            for mac, token in outstanding.items():
                self._grants[mac] = _Grant(token, mac)
            self._journal_changes()

    def revoke(self, mac: str) -> None:
        """Forget the token of ``mac`` (the host was installed or left the run)."""
        with self._lock:
            if self._grants.pop(mac, None) is not None:
                self._journal_changes()

    def outstanding(self) -> Dict[str, str]:
        """``{mac: token}`` of the tokens no phone-home has claimed yet."""
        with self._lock:
            return self._outstanding()

    def _outstanding(self):
        return {mac: grant.token.decode("ascii") for mac, grant in self._grants.items() if grant.bound_ip is None}

    def _journal_changes(self):
        if self._journal is not None:
            self._journal(self._outstanding())

    def _find(self, token):
        # Compare against every grant without stopping at the first match, so the time taken does not
        # tell an attacker how many leading characters were right nor which grant matched.
        presented = _as_bytes(token)
        found = None
        for grant in self._grants.values():
            if hmac.compare_digest(grant.token, presented):
                found = grant
        return found

    def check(self, token: Union[str, bytes], source_ip: str) -> None:
        """Raise TokenRefused unless ``token`` is current and unclaimed, or claimed from ``source_ip``.

        Lets the API refuse a stranger before reading the request body.
        """
        with self._lock:
            self._usable(token, source_ip)

    def claim(self, token: Union[str, bytes], reported_macs: Sequence[str], source_ip: str) -> str:
        """Accept a phone-home and return the host's MAC; raise TokenRefused otherwise.

        An unclaimed token is accepted once if ``reported_macs`` contains the host's MAC, and is then
        bound to that MAC and ``source_ip``. A claimed one is accepted again only from the same address
        with the same MAC (the agent re-reporting after a restart).
        """
        with self._lock:
            grant = self._usable(token, source_ip)
            if grant.mac not in reported_macs:
                raise TokenRefused("the reported MACs do not include the MAC the token was issued for", grant.mac)
            if grant.bound_ip is None:
                grant.bound_ip = source_ip
                self._journal_changes()
            return grant.mac

    def holds(self, mac: str) -> bool:
        """Whether ``mac`` has a token, claimed or not."""
        with self._lock:
            return mac in self._grants

    def _usable(self, token, source_ip):
        grant = self._find(token)
        if grant is None:
            raise TokenRefused("unknown, replaced or forged token")
        if grant.bound_ip is not None and grant.bound_ip != source_ip:
            raise TokenRefused("token already claimed from %s" % grant.bound_ip, grant.mac)
        return grant


def write_outstanding(path: str, outstanding: Mapping[str, str]) -> None:
    """Replace the file at ``path`` with ``outstanding`` (``{mac: token}``), readable by its owner alone."""
    scratch = path + ".new"
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(outstanding, handle, sort_keys=True)
    # A rename, so that a server killed mid-write leaves the previous list rather than half of one.
    os.replace(scratch, path)


def read_outstanding(path: str) -> Dict[str, str]:
    """``{mac: token}`` from a file ``write_outstanding`` wrote; empty when there is none (no earlier server)."""
    try:
        with open(path, encoding="utf-8") as handle:
            outstanding = json.load(handle)
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise NixieError("%s: not the boot server's outstanding agent tokens (%s); delete it to forget them" % (path, exc)) from None
    if not isinstance(outstanding, dict) or not all(isinstance(token, str) for token in outstanding.values()):
        raise NixieError("%s: not the boot server's outstanding agent tokens (a JSON object of MAC to token); "
                         "delete it to forget them" % path)
    return outstanding
