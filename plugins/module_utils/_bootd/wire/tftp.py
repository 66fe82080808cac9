# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""TFTP option negotiation for a read request (RFC 2347, 2348, 2349), as pure functions.

The server (``io.tftp``) parses the request with tftpy's packet factory, which hands over its options as a
dict of strings; ``negotiate`` turns them and the file's size into what the server agrees to. It never
fails: an option this server does not know, or a value it cannot read, is left out of the answer, as
RFC 2347 lets a server do, so the client falls back to plain RFC 1350 for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional

# RFC 1350's block size, for a client that did not agree to another.
DEFAULT_BLKSIZE = 512
# RFC 2348's range. tftpy's own maximum (65536) is above what one UDP datagram can carry (65507 bytes of
# payload over IPv4): a block size agreed to there cannot be sent, and the transfer stalls after the OACK.
MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464

# More digits than this are above every limit here; int() would refuse a few thousand of them anyway.
_MAX_DIGITS = 6


@dataclass(frozen=True)
class Agreement:
    """The answer to a read request's options.

    ``options`` goes into the OACK, in the client's spelling; when it is empty the server sends no
    OACK and starts with DATA block 1 (RFC 2347: an OACK carries only options the client asked for).
    ``blksize`` is the block size of the DATA packets.
    """

    options: Dict[str, str]
    blksize: int


def negotiate(requested: Mapping[str, str], file_size: int) -> Agreement:
    """What the server agrees to, for a client that asked for ``requested`` (name -> value) of a file of ``file_size`` bytes.

    ``blksize`` is accepted with its value clamped to 8..65464: RFC 2348 lets the server answer a smaller one,
    and one below its range gets the smallest it allows, which the client may still refuse with an ERROR.
    ``tsize`` is answered with ``file_size`` (RFC 2349). Names are matched without regard to case (RFC 2347).
    """
    # Of one option asked for more than once (tftpy's dict keeps one value per spelling), the last counts.
    last = {name.lower(): (name, value) for name, value in requested.items()}
    options = {}
    blksize = DEFAULT_BLKSIZE
    for option, (name, value) in last.items():
        number = _decimal(value)
        if number is None:
            continue
        if option == "blksize":
            blksize = min(max(number, MIN_BLKSIZE), MAX_BLKSIZE)
            options[name] = str(blksize)
        elif option == "tsize":
            options[name] = str(file_size)
    return Agreement(options, blksize)


def _decimal(value: str) -> Optional[int]:
    if not (value.isascii() and value.isdigit()):
        return None
    digits = value.lstrip("0")
    return int(digits or "0") if len(digits) <= _MAX_DIGITS else 10 ** _MAX_DIGITS
