"""nixie.provision.wake, run as a real Ansible module; the packets are caught on real sockets."""

import os
import socket

import pytest
from nixielab.ansiblerun import run_module as run_ansible_module

MAC = "bc:24:11:d0:28:34"
# The magic packet, written out independently of the code under test: 6 x 0xFF, then the MAC 16 times.
EXPECTED = b"\xff" * 6 + bytes.fromhex("bc2411d02834") * 16


def run_module(args, wrapper=(), check=False):
    return run_ansible_module("nixie.provision.wake", args, wrapper=wrapper, check=check)


@pytest.fixture
def receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_sends_count_magic_packets_byte_for_byte(receiver):
    port = receiver.getsockname()[1]
    result = run_module({"mac": "BC-24-11-D0-28-34", "broadcast": "127.0.0.1", "port": port, "interface": "lo", "count": 3, "interval": 0.05})
    assert result["changed"] is True, result
    assert result["packets_sent"] == 3
    assert result["source_address"] == "127.0.0.1"
    assert bytes.fromhex(result["magic_packet"]) == EXPECTED
    for dummy in range(3):
        payload, sender = receiver.recvfrom(2048)
        assert payload == EXPECTED
        assert sender[0] == "127.0.0.1"
    receiver.settimeout(0.3)
    with pytest.raises(socket.timeout):
        receiver.recvfrom(2048)


def test_ipv6_destination():
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    sock.settimeout(5)
    with sock:
        result = run_module({"mac": MAC, "broadcast": "::1", "port": sock.getsockname()[1], "count": 1})
        assert result["packets_sent"] == 1, result
        assert sock.recvfrom(2048)[0] == EXPECTED


def test_check_mode_sends_nothing(receiver):
    port = receiver.getsockname()[1]
    result = run_module({"mac": MAC, "broadcast": "127.0.0.1", "port": port}, check=True)
    assert result["packets_sent"] == 0 and result["changed"] is True, result
    assert bytes.fromhex(result["magic_packet"]) == EXPECTED
    receiver.settimeout(0.5)
    with pytest.raises(socket.timeout):
        receiver.recvfrom(2048)


@pytest.mark.parametrize("args, message", [
    ({"mac": "bc:24:11:d0:28"}, "mac: 'bc:24:11:d0:28' is not a MAC address"),
    ({"mac": MAC, "broadcast": "not-an-address"}, "broadcast: 'not-an-address' is not an IPv4 or IPv6 address"),
    ({"mac": MAC, "interface": "nixie-nope0"}, "interface: no network interface named 'nixie-nope0'"),
    ({"mac": MAC, "port": 0}, "port: must be from 1 to 65535"),
    ({"mac": MAC, "count": 0}, "count must be at least 1"),
])
def test_bad_input_fails_clearly(args, message):
    result = run_module(args)
    assert result.get("failed") is True
    assert message in result["msg"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create an empty network namespace")
def test_unreachable_destination_fails_instead_of_pretending():
    # In a fresh network namespace with no interface up, nothing can leave: the send itself must fail.
    result = run_module({"mac": MAC, "broadcast": "10.0.0.255", "count": 2}, wrapper=("unshare", "--net"))
    assert result.get("failed") is True, result
    assert "cannot send a magic packet to 10.0.0.255 port 9" in result["msg"]
    assert result["packets_sent"] == 0
