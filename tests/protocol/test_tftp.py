# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The read-only TFTP server on loopback: real clients (tftp-hpa, busybox, curl) and hand-built packets."""

from __future__ import annotations

import errno
import os
import random
import resource
import select
import socket
import struct
import subprocess
import threading
import time
import types

import pytest
from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpShared import TftpException

from ansible_collections.nixie.provision.plugins.module_utils._bootd.io import tftp
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.tftp import (
    FIRST_RETRANSMIT, LAST_BLOCK_UNACKNOWLEDGED, MIN_RETRANSMIT, TFTP_FIRST_ACK_RETRIES, TFTP_TRANSFERS_PER_CLIENT, TftpServer,
)
from ansible_collections.nixie.provision.plugins.module_utils._ipxe_dir import find_ipxe_binaries
from datagrams import received_within

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6


@pytest.fixture
def tftp_dir(tmp_path):
    directory = tmp_path / "ipxe"
    directory.mkdir()
    (directory / "ipxe.efi").write_bytes(os.urandom(1024 * 1024))
    (directory / "undionly.kpxe").write_bytes(os.urandom(74213))
    (directory / "secret.txt").write_bytes(b"NOT-FOR-CLIENTS")
    (directory / "passwd").symlink_to("/etc/passwd")
    (directory / "etc").symlink_to("/etc")
    (directory / "sub").mkdir()
    (directory / "sub" / "ipxe.efi").write_bytes(b"NOT-FOR-CLIENTS")
    return directory


def start_server(tftp_dir, **options):
    """A TftpServer on 127.0.0.1 (``options`` as TftpServer takes them) whose events are collected in its ``events`` list."""
    events = []
    lock = threading.Lock()

    def on_event(step, client_ip, **fields):
        with lock:
            events.append(dict(fields, step=step, ip=client_ip))

    options.setdefault("timeout", 1)
    running = TftpServer(find_ipxe_binaries(str(tftp_dir)), host="127.0.0.1", port=0, on_event=on_event, **options)
    running.start()
    running.events = events
    return running


@pytest.fixture
def server(tftp_dir):
    running = start_server(tftp_dir)
    yield running
    running.stop()
    assert not running._thread


def rrq(filename, mode=b"octet", options=(), opcode=RRQ):
    if isinstance(filename, str):
        filename = filename.encode("utf-8")
    packet = struct.pack("!H", opcode) + filename + b"\0" + mode + b"\0"
    for name, value in options:
        packet += name + b"\0" + value + b"\0"
    return packet


def exchange(server, packet, wait=2.0):
    """Send one request from a fresh port; return the first answer (opcode, payload) or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(wait)
        sock.sendto(packet, server.address)
        try:
            answer, sender = sock.recvfrom(70000)
        except socket.timeout:
            return None
        opcode = struct.unpack("!H", answer[:2])[0]
        if opcode in (DATA, OACK):
            # Tell the server to stop this transfer at once rather than wait for its retries.
            sock.sendto(struct.pack("!HH", ERROR, 0) + b"done\0", sender)
        return opcode, answer[2:]


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, timeout=60, check=False, **kwargs)


def test_find_ipxe_binaries_is_an_allow_list(tftp_dir):
    assert find_ipxe_binaries(str(tftp_dir)) == {
        "ipxe.efi": str(tftp_dir / "ipxe.efi"), "undionly.kpxe": str(tftp_dir / "undionly.kpxe"),
    }


def test_tftp_hpa_fetches_ipxe_efi(server, tftp_dir, tmp_path):
    out = tmp_path / "got.efi"
    done = run(["tftp", "-m", "binary", server.address[0], str(server.address[1]), "-c", "get", "ipxe.efi", str(out)])
    assert done.returncode == 0, done
    assert out.read_bytes() == (tftp_dir / "ipxe.efi").read_bytes()
    time.sleep(0.1)
    steps = [(event["step"], event.get("file")) for event in server.events]
    assert steps == [("tftp_start", "ipxe.efi"), ("tftp_done", "ipxe.efi")]
    assert server.events[1]["ok"] and server.events[1]["bytes"] == 1024 * 1024
    assert server.events[0]["ip"] == "127.0.0.1"


def test_blksize_1468_with_busybox_and_curl(server, tftp_dir, tmp_path):
    expected = (tftp_dir / "ipxe.efi").read_bytes()
    out = tmp_path / "busybox.efi"
    done = run(["busybox", "tftp", "-b", "1468", "-g", "-r", "ipxe.efi", "-l", str(out), server.address[0], str(server.address[1])])
    assert done.returncode == 0, done
    assert out.read_bytes() == expected
    done = run(["curl", "-sS", "--tftp-blksize", "1468", "tftp://%s:%d/ipxe.efi" % server.address])
    assert done.returncode == 0, done
    assert done.stdout == expected
    time.sleep(0.1)
    assert [event["options"].get("blksize") for event in server.events if event["step"] == "tftp_start"] == ["1468", "1468"]


def test_oack_answers_tsize_and_blksize(server, tftp_dir):
    opcode, payload = exchange(server, rrq("undionly.kpxe", options=[(b"blksize", b"1468"), (b"tsize", b"0")]))
    assert opcode == OACK
    fields = payload.split(b"\0")[:-1]
    options = dict(zip(fields[::2], fields[1::2]))
    assert options == {b"blksize": b"1468", b"tsize": b"74213"}


def download(address, packet, family=socket.AF_INET):
    """Run one read request to its end by hand: ``(the OACK's options or None, the file, the DATA payload sizes)``."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(packet, address)
        answer, sender = sock.recvfrom(70000)
        sock.connect(sender)
        oack = None
        if struct.unpack_from("!H", answer)[0] == OACK:
            fields = answer[2:].split(b"\0")[:-1]
            oack = dict(zip(fields[::2], fields[1::2]))
            sock.send(struct.pack("!HH", ACK, 0))
            answer = sock.recv(70000)
        data, sizes = receive_file(sock, int(oack.get(b"blksize", 512)) if oack else 512, answer)
        return oack, data, sizes


def receive_file(sock, blksize, answer):
    """Acknowledge DATA on the connected ``sock`` from ``answer`` (the first DATA) to the end: ``(the file, the payload sizes)``."""
    data, sizes = b"", []
    while True:
        opcode, block = struct.unpack_from("!HH", answer)
        if (opcode, block) == (DATA, len(sizes)):
            # A copy the server sent while our ACK was on its way (a loaded machine's round trip can outlast its
            # retransmission time): a client takes it for nothing, as RFC 1350 clients do.
            answer = sock.recv(70000)
            continue
        assert (opcode, block) == (DATA, len(sizes) + 1), answer[:64]
        data += answer[4:]
        sizes.append(len(answer) - 4)
        sock.send(struct.pack("!HH", ACK, block))
        if len(answer) - 4 < blksize:
            return data, sizes
        answer = sock.recv(70000)


@pytest.mark.parametrize("asked", [b"65465", b"70000", b"99999999999999999999"])
def test_blksize_above_65464_is_answered_with_65464_and_served(server, tftp_dir, asked):
    """A block size no datagram can carry must not be agreed to: the transfer would stall right after the OACK."""
    oack, data, sizes = download(server.address, rrq("undionly.kpxe", options=[(b"blksize", asked)]))
    assert oack == {b"blksize": b"65464"}
    assert data == (tftp_dir / "undionly.kpxe").read_bytes() and sizes == [65464, 74213 - 65464]


def test_only_options_not_served_start_with_data_block_1(server, tftp_dir):
    """No OACK that would carry nothing the client asked for: RFC 2347's client then takes RFC 1350's defaults."""
    options = [(b"timeout", b"1"), (b"windowsize", b"8"), (b"blksize", b"large")]
    oack, data, sizes = download(server.address, rrq("undionly.kpxe", options=options))
    assert oack is None
    assert data == (tftp_dir / "undionly.kpxe").read_bytes() and set(sizes[:-1]) == {512}
    time.sleep(0.1)
    assert [event.get("options") for event in server.events if event["step"] == "tftp_start"] == [{}]


def test_tsize_alone_keeps_the_default_block_size(server, tftp_dir):
    oack, data, sizes = download(server.address, rrq("undionly.kpxe", options=[(b"tsize", b"0")]))
    assert oack == {b"tsize": b"74213"}
    assert data == (tftp_dir / "undionly.kpxe").read_bytes() and set(sizes[:-1]) == {512}


def test_a_binary_changed_on_disk_is_served_changed_and_every_block_size_gets_its_own_packets(server, tftp_dir):
    """A binary's packets are kept per block size and shared by its transfers: a binary rewritten or replaced must be
    served as it now is from the next request, and block sizes past those kept, or too small to keep, served right."""
    binary = tftp_dir / "undionly.kpxe"
    sizes_asked = [b"1468", b"512", b"1024", b"700", b"1400", b"1468", b"8"]
    for asked in sizes_asked:
        oack, data, sizes = download(server.address, rrq("undionly.kpxe", options=[(b"blksize", asked)]))
        assert oack == {b"blksize": asked} and data == binary.read_bytes() and set(sizes[:-1]) == {int(asked)}
    # Five sizes from 512 up were asked for; the smallest, 8, is built per transfer and never kept.
    assert len(server._served["undionly.kpxe"]._packets) == tftp._BLOCK_SIZES_KEPT and 8 not in server._served["undionly.kpxe"]._packets
    binary.write_bytes(os.urandom(70001))
    assert download(server.address, rrq("undionly.kpxe", options=[(b"blksize", b"1468")]))[1] == binary.read_bytes()
    replacement = tftp_dir / "undionly.new"
    replacement.write_bytes(os.urandom(1468 * 3))
    replacement.rename(binary)
    oack, data, sizes = download(server.address, rrq("undionly.kpxe", options=[(b"blksize", b"1468")]))
    assert data == binary.read_bytes() and sizes == [1468, 1468, 1468, 0]


def test_ipv6(tftp_dir):
    six = TftpServer(find_ipxe_binaries(str(tftp_dir)), host="::1", port=0)
    six.start()
    try:
        oack, data, sizes = download(six.address[:2], rrq("ipxe.efi", options=[(b"blksize", b"1428"), (b"tsize", b"0")]),
                                     family=socket.AF_INET6)
        assert oack == {b"blksize": b"1428", b"tsize": b"1048576"}
        assert data == (tftp_dir / "ipxe.efi").read_bytes()
        done = run(["curl", "-sS", "--tftp-blksize", "1428", "tftp://[::1]:%d/ipxe.efi" % six.address[1]])
        assert done.returncode == 0 and done.stdout == data, done.stderr
    finally:
        six.stop()


TRAVERSALS = [
    "../ipxe.efi",
    "../../../../etc/passwd",
    "/etc/passwd",
    "..\\..\\..\\etc\\passwd",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "%2fetc%2fpasswd",
    "passwd",
    "etc/passwd",
    "./etc/passwd",
    "secret.txt",
    "sub/ipxe.efi",
    "./ipxe.efi/..",
    "ipxe.efi/../secret.txt",
    "ipxe.efi/",
    "ipxe.efi/.",
    ".",
    "..",
    "/",
    "IPXE.EFI",
    " ipxe.efi",
    "ipxe.efi ",
    "....//....//etc/passwd",
    "A" * 400,
    "../" * 150 + "etc/passwd",
    "\u2024\u2024/\u2024\u2024/etc/passwd",
    "\uff0e\uff0e\uff0fetc\uff0fpasswd",
    "..\u2215..\u2215etc\u2215passwd",
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_traversal_refused_hand_built(server, name):
    answer = exchange(server, rrq(name))
    # An ERROR packet, or silence for a request the codec cannot even read (non-ASCII names): never data.
    assert answer is None or answer[0] == ERROR, (name, answer)


@pytest.mark.parametrize("raw", [
    b"\0\x01secret.txt\0ipxe.efi\0octet\0",
    b"\0\x01passwd\0\0octet\0",
    b"\0\x01\xc0\xae\xc0\xae/etc/passwd\0octet\0",
    b"\0\x01/etc/passwd\0netascii\0",
    b"\0\x01" + b"B" * 70000,
])
def test_nul_and_overlong_requests_refused(server, raw):
    answer = exchange(server, raw[:65000])
    assert answer is None or answer[0] == ERROR, (raw[:40], answer)


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "secret.txt", "passwd", "etc/passwd", "sub/ipxe.efi"])
def test_traversal_refused_tftp_hpa(server, tmp_path, name):
    out = tmp_path / "leak"
    done = run(["tftp", "-m", "binary", server.address[0], str(server.address[1]), "-c", "get", name, str(out)])
    assert b"Error code" in done.stdout + done.stderr, done
    assert not out.exists() or out.read_bytes() == b""


def test_upload_refused(server, tftp_dir, tmp_path):
    payload = tmp_path / "payload.efi"
    payload.write_bytes(b"EVIL" * 100)
    before = sorted(os.listdir(tftp_dir))
    done = run(["tftp", "-m", "binary", server.address[0], str(server.address[1]), "-c", "put", str(payload), "ipxe.efi"])
    assert b"Error code 2" in done.stdout + done.stderr, done
    assert exchange(server, rrq("new.efi", opcode=WRQ))[0] == ERROR
    assert sorted(os.listdir(tftp_dir)) == before
    assert (tftp_dir / "ipxe.efi").read_bytes() != b"EVIL" * 100


def test_refusals_are_reported(server):
    assert exchange(server, rrq("../../../../etc/passwd"))[0] == ERROR
    assert exchange(server, rrq("ipxe.efi", opcode=WRQ))[0] == ERROR
    time.sleep(0.1)
    assert [(event["step"], event["file"], event["ip"]) for event in server.events] == [
        ("refused", "../../../../etc/passwd", "127.0.0.1"), ("refused", "ipxe.efi", "127.0.0.1")]
    assert all(event["reason"] for event in server.events)


def mutations(seed, count):
    """Seeded mutations of valid requests and other packets: flips, truncations, splices, junk."""
    rng = random.Random(seed)
    seeds = [rrq("ipxe.efi"), rrq("undionly.kpxe", options=[(b"blksize", b"1468"), (b"tsize", b"0")]),
             rrq("x", opcode=WRQ), struct.pack("!HH", ACK, 1), struct.pack("!HH", DATA, 1) + b"data",
             struct.pack("!HH", ERROR, 3) + b"oops\0", struct.pack("!H", OACK) + b"blksize\0" + b"9\0"]
    for dummy in range(count):
        packet = bytearray(rng.choice(seeds))
        for dummy in range(rng.randint(1, 4)):
            action = rng.randrange(5)
            if action == 0 and packet:
                packet[rng.randrange(len(packet))] = rng.randrange(256)
            elif action == 1:
                del packet[rng.randrange(len(packet) + 1):]
            elif action == 2:
                packet[rng.randrange(len(packet) + 1):0] = bytes(rng.randrange(256) for dummy in range(rng.randint(1, 8)))
            elif action == 3:
                packet[0:2] = struct.pack("!H", rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 255, 65535]))
            else:
                packet += rng.choice([b"\0", b"blksize\0", b"-1\0", b"99999999999999999999\0", b"tsize\0", b"\xff\0"])
        yield bytes(packet)


def test_fuzz_packet_codec_100k():
    """10^5 malformed packets through tftpy's codec, the first thing the server does with a datagram.

    The server guards every datagram anyway; this pins down that the codec only fails with the error
    kinds seen here (no hang, no crash of the interpreter, no unexpected exception family).
    """
    factory = TftpPacketFactory()
    started = time.monotonic()
    failures = {}
    for packet in mutations(1, 100_000):
        try:
            factory.parse(packet)
        except (TftpException, struct.error, UnicodeDecodeError) as err:
            failures[type(err).__name__] = failures.get(type(err).__name__, 0) + 1
    assert time.monotonic() - started < 60
    assert failures.get("TftpException", 0) > 1000


def test_server_survives_malformed_burst(server, tftp_dir, tmp_path):
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for dummy in range(4)]
    try:
        for index, packet in enumerate(mutations(2, 20_000)):
            senders[index % 4].sendto(packet, server.address)
            if index % 500 == 0:
                time.sleep(0.01)  # let the server drain its socket buffer; the point is bad input, not load
    finally:
        for sock in senders:
            sock.close()
    out = tmp_path / "after.efi"
    done = run(["tftp", "-m", "binary", server.address[0], str(server.address[1]), "-c", "get", "ipxe.efi", str(out)])
    assert done.returncode == 0 and out.read_bytes() == (tftp_dir / "ipxe.efi").read_bytes(), done
    assert server._thread.is_alive()
    assert server.malformed_packets > 200


def test_parallel_clients_and_throughput(server, tftp_dir, tmp_path):
    """24 curl clients at once with blksize 1468, each from its own address as 24 machines would be (one address
    gets only TFTP_TRANSFERS_PER_CLIENT slots), then one alone: every byte right; rate printed for the record."""
    expected = (tftp_dir / "ipxe.efi").read_bytes()
    url = "tftp://%s:%d/ipxe.efi" % server.address
    started = time.monotonic()
    single = run(["curl", "-sS", "--tftp-blksize", "1468", "-o", str(tmp_path / "single"), url])
    single_seconds = time.monotonic() - started
    assert single.returncode == 0 and (tmp_path / "single").read_bytes() == expected
    started = time.monotonic()
    clients = [subprocess.Popen(["curl", "-sS", "--tftp-blksize", "1468", "--interface", "127.0.1.%d" % (i + 1),
                                 "-o", str(tmp_path / ("p%d" % i)), url]) for i in range(24)]
    codes = [client.wait(timeout=120) for client in clients]
    parallel_seconds = time.monotonic() - started
    assert codes == [0] * 24
    for index in range(24):
        assert (tmp_path / ("p%d" % index)).read_bytes() == expected
    print("\nTFTP 1 MiB blksize 1468: single %.3f s (%.1f MiB/s); 24 parallel %.3f s (%.1f MiB/s aggregate)"
          % (single_seconds, 1 / single_seconds, parallel_seconds, 24 / parallel_seconds))
    # A loose floor (measured ~10x above it here): catches a regression to one block per tick, not jitter.
    assert single_seconds < 2.0


def _receive_data(sock, wait):
    """The block numbers of the DATA packets that arrive within ``wait`` seconds."""
    blocks = []
    for packet, _when in received_within(sock, wait):
        opcode, block = struct.unpack_from("!HH", packet)
        assert opcode == DATA, packet[:64]
        blocks.append(block)
    return blocks


def test_lost_block_is_sent_again_when_the_client_acknowledges_the_previous_one_again(tftp_dir):
    """A re-ACK after the client's own timeout brings the lost block back at once, not after the server's timeout;
    a repeated ACK right behind the first (it crossed our block on the wire) is not answered."""
    slow = TftpServer(find_ipxe_binaries(str(tftp_dir)), host="127.0.0.1", port=0, timeout=10, first_timeout=10, min_timeout=10)
    slow.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(rrq("ipxe.efi"), slow.address)
            sock.settimeout(2)
            packet, transfer = sock.recvfrom(70000)
            assert struct.unpack_from("!HH", packet) == (DATA, 1)
            sock.connect(transfer)
            sock.send(struct.pack("!HH", ACK, 1))
            sock.send(struct.pack("!HH", ACK, 1))
            assert _receive_data(sock, 0.4) == [2], "block 2 once: the repeated ACK was in flight"
            time.sleep(0.6)  # block 2 "lost"; the client's retransmit timer fires
            sock.send(struct.pack("!HH", ACK, 1))
            assert _receive_data(sock, 1.0) == [2], "block 2 again, well before the server's 10 s timeout"
            sock.send(struct.pack("!HH", ACK, 2))
            assert _receive_data(sock, 0.4) == [3]
            sock.send(struct.pack("!HH", ERROR, 0) + b"done\0")
    finally:
        slow.stop()


def _gaps(copies):
    return [later - earlier for (_p, earlier), (_q, later) in zip(copies, copies[1:])]


def test_unacknowledged_block_comes_again_after_the_measured_round_trip_then_less_often(server):
    """A lost block costs the transfer's retransmission time, not the client's own timeout (EDK2's is 4 s): on a lossy
    link most blocks are lost once. Until a block sent once is acknowledged, that time is FIRST_RETRANSMIT; then it
    follows the round trips measured (on loopback, well under MIN_RETRANSMIT, so MIN_RETRANSMIT). Each further copy
    of one block waits twice as long, up to the server's timeout (1 s here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(rrq("ipxe.efi"), server.address)
        packet, transfer = sock.recvfrom(70000)
        first_sent = time.monotonic()
        sock.connect(transfer)
        again = received_within(sock, 0.3)
        assert [packet] + [copy for copy, _when in again] == [packet] * 2
        assert FIRST_RETRANSMIT - 0.01 < again[0][1] - first_sent < FIRST_RETRANSMIT + 0.05, again
        sock.send(struct.pack("!HH", ACK, 1))
        assert struct.unpack_from("!HH", sock.recv(70000)) == (DATA, 2)
        sent = time.monotonic()
        sock.send(struct.pack("!HH", ACK, 2))  # a round trip of block 2, sent once, measured
        copies = received_within(sock, 3.2)
        sock.send(struct.pack("!HH", ERROR, 0) + b"done\0")
    assert {struct.unpack_from("!HH", copy) for copy, _when in copies} == {(DATA, 3)}
    gaps = [later - earlier for (_p, earlier), (_q, later) in zip(copies, copies[1:])]
    assert copies[0][1] - sent < 0.1 and len(gaps) >= 6, gaps
    for index, gap in enumerate(gaps):
        expected = min(MIN_RETRANSMIT * 2 ** index, 1.0)
        assert expected - 0.01 < gap < expected + 0.05, (index, gaps)


def test_transfer_answers_from_the_address_the_client_asked(tftp_dir):
    """Asked at 127.0.0.2 from 127.0.0.1, the kernel's own choice of source would be 127.0.0.1."""
    second = TftpServer(find_ipxe_binaries(str(tftp_dir)), host="127.0.0.2", port=0)
    second.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(2)
            sock.sendto(rrq("undionly.kpxe"), second.address)
            packet, sender = sock.recvfrom(70000)
            assert struct.unpack_from("!HH", packet) == (DATA, 1)
            assert sender[0] == "127.0.0.2" and sender[1] != second.address[1]
            sock.sendto(struct.pack("!HH", ERROR, 0) + b"done\0", sender)
    finally:
        second.stop()


def test_one_address_with_unacknowledged_requests_leaves_the_slots_to_others(server, tftp_dir):
    """70 read requests from one address, none ever acknowledged, hold that address's slots only: another is served
    at once (they used to hold all 64 for ~12 s), and the rest are dropped unanswered and counted, without events."""
    flood = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for dummy in range(70)]
    try:
        for sock in flood:
            sock.bind(("127.0.0.2", 0))
            sock.sendto(rrq("ipxe.efi"), server.address)
        time.sleep(0.3)
        started = time.monotonic()
        oack, data, dummy = download(server.address, rrq("ipxe.efi", options=[(b"blksize", b"1468")]))
        assert time.monotonic() - started < 2
        assert oack == {b"blksize": b"1468"} and data == (tftp_dir / "ipxe.efi").read_bytes()
        answered = 0
        for sock in flood:
            sock.setblocking(False)
            try:
                answered += bool(sock.recv(70000))
            except BlockingIOError:
                pass
        assert answered == TFTP_TRANSFERS_PER_CLIENT
        assert server.dropped_requests == {"per_client": 70 - TFTP_TRANSFERS_PER_CLIENT, "total": 0}
        assert [event["step"] for event in server.events if event["ip"] == "127.0.0.2"] == ["tftp_start"] * TFTP_TRANSFERS_PER_CLIENT
    finally:
        for sock in flood:
            sock.close()


def _collect(sock, seconds, into):
    """What ``sock`` receives in the next ``seconds``, appended to ``into`` by a thread (returned, to join)."""
    thread = threading.Thread(target=lambda: into.extend(packet for packet, _when in received_within(sock, seconds)))
    thread.start()
    return thread


def test_first_packet_is_sent_a_few_times_only_until_the_client_acknowledges(tftp_dir):
    """A request whose source never acknowledges (it may be spoofed) draws TFTP_FIRST_ACK_RETRIES copies of its first
    packet, DATA 1 or the OACK, and is dropped after first_ack_wait; once a client has acknowledged, the full retries apply."""
    server = start_server(tftp_dir, first_ack_wait=3)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent_data, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent_oack, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as answering:
            answering.settimeout(2)
            answering.sendto(rrq("ipxe.efi"), server.address)
            packet, transfer = answering.recvfrom(70000)
            assert struct.unpack_from("!HH", packet) == (DATA, 1)
            answering.connect(transfer)
            silent_data.sendto(rrq("ipxe.efi"), server.address)
            silent_oack.sendto(rrq("ipxe.efi", options=[(b"tsize", b"0")]), server.address)
            answering.send(struct.pack("!HH", ACK, 1))
            received = {"data": [], "oack": [], "answering": []}
            threads = [_collect(silent_data, 5, received["data"]), _collect(silent_oack, 5, received["oack"]),
                       _collect(answering, 5, received["answering"])]
            for thread in threads:
                thread.join()
    finally:
        server.stop()
    assert len(received["data"]) == TFTP_FIRST_ACK_RETRIES and len(set(received["data"])) == 1
    assert struct.unpack_from("!HH", received["data"][0]) == (DATA, 1)
    assert len(received["oack"]) == TFTP_FIRST_ACK_RETRIES and set(received["oack"]) == {struct.pack("!H", OACK) + b"tsize\0001048576\0"}
    # Block 2 unanswered: sent at once, then again every ~1 s through the 5 s, not stopped after the first few.
    assert len(received["answering"]) > TFTP_FIRST_ACK_RETRIES
    assert {struct.unpack_from("!HH", packet) for packet in received["answering"]} == {(DATA, 2)}
    errors = sorted(event["error"] for event in server.events if event["step"] == "tftp_done")
    assert errors == ["first packet never acknowledged"] * 2 + ["server stopped"]


def test_a_client_whose_first_ack_was_lost_is_served_when_it_acknowledges_seconds_later(server, tftp_dir):
    """EDK2 answers the OACK once and, when that ACK is lost, sends it again only after its own 4 s timeout: the transfer
    must still be there, silent after its copies. A repeated request meanwhile gets one copy of the OACK, not more."""
    oack = struct.pack("!H", OACK) + b"blksize\0001468\0"
    request = rrq("ipxe.efi", options=[(b"blksize", b"1468")])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2)
        client.sendto(request, server.address)
        first, transfer = client.recvfrom(70000)
        copies = [first] + [packet for packet, _when in received_within(client, 2.5)]
        assert copies == [oack] * TFTP_FIRST_ACK_RETRIES
        client.sendto(request, server.address)
        assert [packet for packet, _when in received_within(client, 1.5)] == [oack]
        assert not [event for event in server.events if event["step"] == "tftp_done"]
        # About 4 s after the request, as EDK2's own retransmission comes.
        client.connect(transfer)
        client.send(struct.pack("!HH", ACK, 0))
        data, _sizes = receive_file(client, 1468, client.recv(70000))
    assert data == (tftp_dir / "ipxe.efi").read_bytes()
    assert _wait_for(lambda: [event for event in server.events if event["step"] == "tftp_done"])
    assert [(event["ok"], event["error"]) for event in server.events if event["step"] == "tftp_done"] == [(True, None)]


def test_a_transfer_whose_last_ack_is_lost_says_so_and_one_that_stalls_times_out(tftp_dir):
    server = start_server(tftp_dir, retries=2)
    whole = (tftp_dir / "undionly.kpxe").read_bytes()
    try:
        for stop_before in (len(whole) // 512 + 1, 3):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(2)
                client.sendto(rrq("undionly.kpxe"), server.address)
                while True:
                    packet, transfer = client.recvfrom(70000)
                    block = struct.unpack_from("!HH", packet)[1]
                    if block == stop_before:
                        break
                    client.sendto(struct.pack("!HH", ACK, block), transfer)
                time.sleep(3)
    finally:
        server.stop()
    done = [(event["error"], event["bytes"]) for event in server.events if event["step"] == "tftp_done"]
    assert done == [(LAST_BLOCK_UNACKNOWLEDGED, len(whole)), ("timed out", 3 * 512)]


class _FailingEpoll:
    """select.epoll whose register() fails as the kernel's does past fs.epoll.max_user_watches, ``failures`` times."""

    failures = 0

    def __init__(self):
        self._epoll = select.epoll()

    def register(self, fd, mask):
        if _FailingEpoll.failures:
            _FailingEpoll.failures -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._epoll.register(fd, mask)

    def __getattr__(self, name):
        return getattr(self._epoll, name)


def _wait_for(predicate, seconds=3):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_requests_whose_socket_cannot_be_opened_or_watched_are_refused_and_the_server_goes_on(tftp_dir, monkeypatch):
    """Out of file descriptors (EMFILE) and out of epoll watches (ENOSPC): those requests are refused with an event,
    and the next client downloads its file (a failed register used to end the server thread)."""
    monkeypatch.setattr(tftp, "select", types.SimpleNamespace(epoll=_FailingEpoll, EPOLLIN=select.EPOLLIN))
    running = start_server(tftp_dir)
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for dummy in range(4)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hogs = []
    try:
        # Served once first, so what the limit breaks below is known to have worked before it.
        assert exchange(running, rrq("undionly.kpxe"))[0] == DATA
        assert _wait_for(lambda: len(running.events) == 2), running.events
        running.events.clear()
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        try:
            while True:
                hogs.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as err:
            assert err.errno == errno.EMFILE
        for sock in clients[:2]:
            sock.sendto(rrq("ipxe.efi"), running.address)
        assert _wait_for(lambda: len(running.events) == 2), running.events
        for hog in hogs:
            os.close(hog)
        hogs = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        _FailingEpoll.failures = 2
        for sock in clients[2:]:
            sock.sendto(rrq("undionly.kpxe"), running.address)
        assert _wait_for(lambda: len(running.events) == 4), running.events
        assert [(event["step"], event["file"]) for event in running.events] == [("refused", "ipxe.efi")] * 2 + [("refused", "undionly.kpxe")] * 2
        assert [os.strerror(errno.EMFILE) in event["reason"] for event in running.events[:2]] == [True] * 2
        assert [os.strerror(errno.ENOSPC) in event["reason"] for event in running.events[2:]] == [True] * 2
        for sock in clients:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(70000)
        oack, data, dummy = download(running.address, rrq("ipxe.efi", options=[(b"blksize", b"1468")]))
        assert data == (tftp_dir / "ipxe.efi").read_bytes()
        assert running._thread.is_alive()
    finally:
        for hog in hogs:
            os.close(hog)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        _FailingEpoll.failures = 0
        for sock in clients:
            sock.close()
        running.stop()


def test_an_unforeseen_error_costs_its_own_request_or_transfer_only(server, tftp_dir, monkeypatch, caplog):
    """A bug met while handling a request, or a transfer's packet, is logged and ends that transfer alone."""
    failing = {"request": True, "ack": True}
    negotiate, acknowledged = tftp.negotiate, tftp._Transfer.acknowledged

    def negotiate_once(*args):
        if failing.pop("request", False):
            raise RuntimeError("a bug in the negotiation")
        return negotiate(*args)

    def acknowledged_once(transfer, *args):
        if failing.pop("ack", False):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return acknowledged(transfer, *args)

    monkeypatch.setattr(tftp, "negotiate", negotiate_once)
    monkeypatch.setattr(tftp._Transfer, "acknowledged", acknowledged_once)
    assert exchange(server, rrq("ipxe.efi"), wait=0.5) is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(rrq("ipxe.efi"), server.address)
        packet, transfer = sock.recvfrom(70000)
        sock.sendto(struct.pack("!HH", ACK, 1), transfer)
        assert _wait_for(lambda: [event["step"] for event in server.events] == ["tftp_start", "tftp_done"]), server.events
    assert server.events[1]["ok"] is False and os.strerror(errno.EIO) in server.events[1]["error"]
    oack, data, dummy = download(server.address, rrq("ipxe.efi", options=[(b"blksize", b"1468")]))
    assert data == (tftp_dir / "ipxe.efi").read_bytes()
    assert [record.getMessage() for record in caplog.records if record.name == tftp.__name__] == [
        "TFTP: a bug in the negotiation", "TFTP: " + str(OSError(errno.EIO, os.strerror(errno.EIO)))]
