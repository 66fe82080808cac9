# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One-time agent tokens: the only thing that lets an installer's agent talk to the boot server.

A token is minted when a host's iPXE script is served and travels to the installer on its kernel
command line. Each token is held by the address that fetched the script: fetching the script again
from that address replaces that address's token, never another address's, so a stranger fetching a
listed MAC's script cannot cancel the token the real machine holds. The first phone-home that presents
a token of a MAC *and* reports that MAC claims the MAC for its source address. A later claim of the
same MAC from another address, with whichever of its tokens, is a second machine answering as that
MAC: ``claim`` raises TokenConflict and the host table refuses both. Bookkeeping, like Ironic's agent
token (handed out once, required on every later call).

Outstanding tokens (minted, their MAC not claimed yet) are the one thing a killed boot server must not
forget: an installer that booted with one keeps presenting it, and nothing but a power cycle gives it
another. The store reports each change of them to a ``journal`` (the server keeps them in its run
directory), and a server restarted on that run directory adopts them. A claimed MAC's other tokens are
left out on purpose: adopted, they would let the other machine claim the MAC afresh.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from typing import Callable, Dict, Mapping, Optional, Sequence, Union

from ansible_collections.nixie.provision.plugins.module_utils._bootd.runfiles import write_private
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

# secrets.token_urlsafe(32) gives 256 random bits as 43 characters from [A-Za-z0-9_-]: safe on a
# kernel command line and in an iPXE script without quoting.
TOKEN_BYTES = 32
# Tokens one MAC may hold unclaimed at once, one per address that fetched its script: a real machine
# fetches it from one or two addresses (its firmware's lease, then iPXE's). Past this the script
# request is refused rather than an older token dropped, which could be the real machine's.
TOKENS_PER_MAC = 8

# {mac: {address that fetched the script: token}}
Outstanding = Dict[str, Dict[str, str]]


class TokenRefused(NixieError):
    """A token is not accepted; ``mac`` names the host it was issued for when that is known.

    The reason is for the event log only: clients get a bare 403, whatever the reason.
    """

    def __init__(self, reason: str, mac: Optional[str] = None) -> None:
        super().__init__(reason, mac=mac)
        self.mac = mac


class TokenConflict(TokenRefused):
    """A valid claim of a MAC that another address claimed already: two machines answer as one host."""


class _Grant:
    __slots__ = ("token", "mac", "holder")

    def __init__(self, token: str, mac: str, holder: str) -> None:
        self.token = token.encode("ascii")
        self.mac = mac
        self.holder = holder


def _as_bytes(token):
    # hmac.compare_digest refuses non-ASCII str with TypeError; a forged token must be refused, not crash.
    if isinstance(token, bytes):
        return token
    if isinstance(token, str):
        return token.encode("utf-8", "surrogatepass")
    return b""


class TokenStore:
    """Per-host tokens keyed by normalized MAC (lower case, colons) and holder address; thread-safe."""

    def __init__(self, token_bytes: int = TOKEN_BYTES, journal: Optional[Callable[[Outstanding], None]] = None) -> None:
        """``journal``, if given, is called with ``outstanding()`` after every change of it, under the lock."""
        if token_bytes < 16:
            raise ValueError("agent tokens need at least 128 bits")
        self._token_bytes = token_bytes
        self._journal = journal
        self._grants: Dict[str, Dict[str, _Grant]] = {}
        # MAC -> the source address of its first accepted phone-home.
        self._claimed: Dict[str, str] = {}
        self._lock = threading.Lock()

    def mint(self, mac: str, holder: str) -> str:
        """Return a fresh token for ``mac``, fetched by ``holder``; it replaces that holder's earlier token only.

        Raises TokenRefused when ``mac`` already holds TOKENS_PER_MAC tokens of other holders.
        """
        token = secrets.token_urlsafe(self._token_bytes)
        with self._lock:
            held = self._grants.setdefault(mac, {})
            if holder not in held and len(held) >= TOKENS_PER_MAC:
                raise TokenRefused("%d addresses hold a token for this MAC already" % TOKENS_PER_MAC, mac)
            held[holder] = _Grant(token, mac, holder)
            self._journal_changes()
        return token

    def adopt(self, outstanding: Mapping[str, Mapping[str, str]]) -> None:
        """Accept the unclaimed ``{mac: {holder: token}}`` an earlier server handed out, as if minted here."""
        with self._lock:
            for mac, held in outstanding.items():
                for holder, token in held.items():
                    self._grants.setdefault(mac, {})[holder] = _Grant(token, mac, holder)
            self._journal_changes()

    def revoke(self, mac: str) -> None:
        """Forget the tokens of ``mac`` and who claimed it (the host was installed, or is to boot the installer anew)."""
        with self._lock:
            self._claimed.pop(mac, None)
            if self._grants.pop(mac, None) is not None:
                self._journal_changes()

    def outstanding(self) -> Outstanding:
        """``{mac: {holder: token}}`` of the MACs holding tokens that no phone-home has claimed yet."""
        with self._lock:
            return self._outstanding()

    def _outstanding(self):
        return {mac: {holder: grant.token.decode("ascii") for holder, grant in held.items()}
                for mac, held in self._grants.items() if held and mac not in self._claimed}

    def _journal_changes(self):
        if self._journal is not None:
            self._journal(self._outstanding())

    def _find(self, token):
        # Compare against every grant without stopping at the first match, so the time taken does not
        # tell an attacker how many leading characters were right nor which grant matched.
        presented = _as_bytes(token)
        found = None
        for held in self._grants.values():
            for grant in held.values():
                if hmac.compare_digest(grant.token, presented):
                    found = grant
        return found

    def check(self, token: Union[str, bytes]) -> None:
        """Raise TokenRefused unless ``token`` is current. Lets the API refuse a stranger before reading the body."""
        with self._lock:
            self._usable(token)

    def claim(self, token: Union[str, bytes], reported_macs: Sequence[str], source_ip: str) -> str:
        """Accept a phone-home and return the host's MAC; raise TokenRefused otherwise.

        A current token is accepted if ``reported_macs`` contains the host's MAC and no other address
        claimed that MAC before; the MAC is then claimed by ``source_ip``, which may report again (the
        agent restarting). Raises TokenConflict for a claim from another address.
        """
        with self._lock:
            grant = self._usable(token)
            if grant.mac not in reported_macs:
                raise TokenRefused("the reported MACs do not include the MAC the token was issued for", grant.mac)
            claimed = self._claimed.get(grant.mac)
            if claimed is not None and claimed != source_ip:
                raise TokenConflict("%s claimed this MAC already" % claimed, grant.mac)
            if claimed is None:
                self._claimed[grant.mac] = source_ip
                self._journal_changes()
            return grant.mac

    def state(self, mac: str) -> Optional[str]:
        """``"claimed"`` once a phone-home claimed ``mac``, ``"awaiting"`` while it holds tokens nobody claimed, else None."""
        with self._lock:
            if mac in self._claimed:
                return "claimed"
            return "awaiting" if self._grants.get(mac) else None

    def _usable(self, token):
        grant = self._find(token)
        if grant is None:
            raise TokenRefused("unknown, replaced or forged token")
        return grant


def write_outstanding(path: str, outstanding: Mapping[str, Mapping[str, str]]) -> None:
    """Replace the file at ``path`` with ``outstanding`` (``{mac: {holder: token}}``), readable by its owner alone."""
    write_private(path, json.dumps(outstanding, sort_keys=True))


def read_outstanding(path: str) -> Outstanding:
    """``{mac: {holder: token}}`` from a file ``write_outstanding`` wrote; empty when there is none (no earlier server)."""
    try:
        with open(path, encoding="utf-8") as handle:
            outstanding = json.load(handle)
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise NixieError("%s: not the boot server's outstanding agent tokens (%s); delete it to forget them" % (path, exc)) from None
    if not isinstance(outstanding, dict) or not all(
            isinstance(held, dict) and all(isinstance(token, str) for token in held.values()) for held in outstanding.values()):
        raise NixieError("%s: not the boot server's outstanding agent tokens (a JSON object of MAC to address to token); "
                         "delete it to forget them" % path)
    return outstanding
