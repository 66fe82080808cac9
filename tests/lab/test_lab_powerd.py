"""The power daemon receives Wake-on-LAN the way a NIC does, and powers on only the machine addressed."""

from __future__ import annotations

import pytest

from nixielab import magic_packet

pytestmark = [pytest.mark.netns, pytest.mark.lab]

KNOWN, UNKNOWN = "52:54:00:31:00:01", "52:54:00:31:00:99"


@pytest.mark.parametrize("lab", [{"ipv6": True}], indirect=True)
def test_every_transport_is_received_and_only_known_macs_start_machines(lab):
    machine = lab.add_machine("wol1", KNOWN)
    power = lab.start_power_daemon()
    controller_mac = lab.run_ctl(["cat", "/sys/class/net/nixie0/address"], capture_output=True, text=True, check=True).stdout.strip()

    lab.send_wol(magic_packet(UNKNOWN))
    lab.send_wol(magic_packet(KNOWN)[:-1])  # one byte short: not a magic packet
    unknown = power.wait_for(lambda entry: entry.get("mac") == UNKNOWN, 10)
    invalid = power.wait_for(lambda entry: entry.get("action") == "invalid", 10)
    assert unknown["action"] == "unknown-mac" and unknown["destination"] == "10.213.0.255" and unknown["source"].startswith("10.213.0.1:")
    assert "length 101" in invalid["error"]
    assert not machine.running
    assert [record["label"] for record in lab.tracker.records()] == ["powerd", "site-dhcp"]

    # As ether-wake sends by default: a frame to the sleeping NIC's own MAC, which only a promiscuous listener sees.
    lab.send_wol(magic_packet(KNOWN, password=bytes.fromhex("a1b2c3d4e5f6")), via="ethernet", destination=KNOWN)
    started = power.wait_for(lambda entry: entry.get("action") == "started", 10)
    assert started == {**started, "via": "ethernet", "source": controller_mac, "destination": "otherhost",
                       "mac": KNOWN, "password": "a1b2c3d4e5f6", "machine": "wol1"}
    assert machine.running and machine.pid == started["pid"]

    lab.send_wol(magic_packet(KNOWN), via="udp6", port=7)
    again = power.wait_for(lambda entry: entry.get("via") == "udp6", 10)
    assert again["action"] == "already-running" and again["destination"] == "ff02::1" and again["port"] == 7
    assert [packet["action"] for packet in power.packets(KNOWN)] == ["started", "already-running"]

    power.stop()
    assert not machine.running
