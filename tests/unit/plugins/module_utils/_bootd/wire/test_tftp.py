# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""TFTP option negotiation: what a read request's options get back (the server is tested in tests/protocol/test_tftp.py)."""

from __future__ import annotations

import pytest
from tftpy.TftpPacketFactory import TftpPacketFactory

from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire.tftp import Agreement, negotiate

SIZE = 74213


def test_no_options_no_oack():
    assert negotiate({}, SIZE) == Agreement({}, 512)


@pytest.mark.parametrize("asked,agreed", [
    ("1468", 1468), ("512", 512), ("8", 8), ("65464", 65464), ("01468", 1468),
    # RFC 2348's ceiling: above it a DATA packet would not fit in one datagram.
    ("65465", 65464), ("70000", 65464), ("99999999999999999999", 65464), ("9" * 5000, 65464),
    # Below its floor: the smallest block the RFC allows.
    ("7", 8), ("0", 8), ("000", 8),
])
def test_blksize_is_clamped_to_8_through_65464(asked, agreed):
    assert negotiate({"blksize": asked}, SIZE) == Agreement({"blksize": str(agreed)}, agreed)


@pytest.mark.parametrize("value", ["", "abc", "-1", "+1468", " 1468", "1468 ", "14.68", "0x5bc", "1e3", "\u0661\u0664\u0666\u0668", "\uff11\uff14"])
def test_blksize_that_is_not_a_decimal_number_is_ignored(value):
    assert negotiate({"blksize": value}, SIZE) == Agreement({}, 512)
    assert negotiate({"blksize": value, "tsize": "0"}, SIZE) == Agreement({"tsize": str(SIZE)}, 512)


@pytest.mark.parametrize("value", ["0", "1", "123456789"])
def test_tsize_is_answered_with_the_file_size(value):
    assert negotiate({"tsize": value}, SIZE) == Agreement({"tsize": str(SIZE)}, 512)
    assert negotiate({"tsize": value}, 0) == Agreement({"tsize": "0"}, 512)


@pytest.mark.parametrize("value", ["", "-1", "x"])
def test_tsize_that_is_not_a_decimal_number_is_ignored(value):
    assert negotiate({"tsize": value}, SIZE) == Agreement({}, 512)


def test_both_options_together():
    assert negotiate({"blksize": "1468", "tsize": "0"}, SIZE) == Agreement({"blksize": "1468", "tsize": str(SIZE)}, 1468)


@pytest.mark.parametrize("requested", [
    {"timeout": "1"}, {"windowsize": "8"}, {"multicast": "x"}, {"utimeout": "1000"}, {"blksize2": "1024"}, {"rollover": "0"},
])
def test_unknown_options_are_ignored(requested):
    assert negotiate(requested, SIZE) == Agreement({}, 512)
    assert negotiate(dict(requested, blksize="1468"), SIZE) == Agreement({"blksize": "1468"}, 1468)


def test_names_are_matched_without_case_and_answered_in_the_clients_spelling():
    assert negotiate({"BlkSize": "1468", "TSIZE": "0"}, SIZE) == Agreement({"BlkSize": "1468", "TSIZE": str(SIZE)}, 1468)


def test_of_a_repeated_option_the_last_counts():
    assert negotiate({"blksize": "512", "BLKSIZE": "1468"}, SIZE) == Agreement({"BLKSIZE": "1468"}, 1468)
    # The last one unreadable: the option is ignored, not answered with the earlier value.
    assert negotiate({"blksize": "1468", "BLKSIZE": "junk"}, SIZE) == Agreement({}, 512)


def test_repeats_as_tftpys_factory_hands_them_over():
    request = TftpPacketFactory().parse(b"\0\x01ipxe.efi\0octet\0blksize\x001468\0tsize\x000\0blksize\x0070000\0")
    assert negotiate(request.options, SIZE) == Agreement({"blksize": "65464", "tsize": str(SIZE)}, 65464)
