"""bench/bare_tftp.py, P3's floor: its request parsing and packets, and a real curl download from it over loopback."""

import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bench import bare_tftp

SCRIPT = Path(bare_tftp.__file__)


def test_the_options_of_a_read_request_and_of_nothing_else():
    request = struct.pack("!H", 1) + b"ipxe.efi\0octet\0BLKSIZE\x001468\0tsize\x000\0"
    assert bare_tftp.request_options(request) == {"blksize": "1468", "tsize": "0"}
    assert bare_tftp.request_options(struct.pack("!H", 1) + b"ipxe.efi\0octet\0") == {}
    assert bare_tftp.request_options(struct.pack("!HH", 4, 1)) == {}
    assert bare_tftp.request_options(b"") == {}


def test_data_packets_end_short_or_empty():
    packets = bare_tftp.data_packets(b"a" * 1000, 512)
    assert [len(packet) - 4 for packet in packets[1:]] == [512, 488]
    assert packets[2][:4] == struct.pack("!HH", 3, 2)
    assert [len(packet) - 4 for packet in bare_tftp.data_packets(b"a" * 1024, 512)[1:]] == [512, 512, 0]


@pytest.fixture
def bare_server(tmp_path):
    served = tmp_path / "ipxe.efi"
    # A multiple of 1468: the transfer ends on an empty block.
    served.write_bytes(bytes(range(256)) * (1468 * 3 // 256) + bytes(1468 * 3 % 256))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, str(SCRIPT), "127.0.0.1", str(port), str(served)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        yield "tftp://127.0.0.1:%d/ipxe.efi" % port, served.read_bytes()
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


@pytest.mark.parametrize("options", [["--tftp-blksize", "1468"], []])
def test_curl_gets_the_whole_file_with_and_without_a_block_size(bare_server, tmp_path, options):
    url, expected = bare_server
    downloaded = tmp_path / "downloaded"
    subprocess.run(["curl", "-sSf", "--max-time", "20", *options, "-o", str(downloaded), url], check=True, timeout=30)
    assert downloaded.read_bytes() == expected
