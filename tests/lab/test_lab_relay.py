"""Machines behind a real DHCP relay, in the routed lab (nixielab.routed): the controller on one subnet, the machines on
another, a router between them running ISC dhcrelay with option 82, relaying to the site DHCP server and to Nixie.

1. nixie-01 (SeaBIOS, QEMU's iPXE ROM) and nixie-02 (OVMF, EDK2's own PXE client, then ipxe.efi) are woken by directed
   broadcasts to their subnet (hosts.json `wol.broadcast`), which the router forwards, and go from off to `installed`
   through the provision playbook, both at once. Every DHCP answer of Nixie's goes to the relay (giaddr) with the
   relay's option 82 echoed, and reaches the machine from the router; TFTP, HTTP, the phone-home and the install are
   routed. A PXE client whose MAC is in no inventory, behind the same relay, gets its lease from the site and nothing
   from Nixie.
2. The relay is then told of the site DHCP server only, as a site admin who forgot Nixie would leave it. A PXE client
   behind it (a real udhcpc, nixie-03 in hosts.json) gets its lease, Nixie hears nothing, and nixie-03 fails alone with
   the question whether the relay forwards to Nixie's address; nixie-01, in the same run, is found installed.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from nixielab import netboot
from nixielab.capture import DHCP_OFFER, Capture, boot_file, dhcp_options, vendor_class
from nixielab.net import UDHCPC_SCRIPT
from scapy.layers.dhcp import BOOTP
from scapy.layers.inet import IP

pytestmark = pytest.mark.lab

DHCP_ONLY = "udp port 67 or udp port 68"
OPTION_RELAY_AGENT = 82
# What ISC dhcrelay -a puts into option 82: sub-option 1 (circuit id), the name of the interface the request came in on.
CIRCUIT = b"\x01\x05down0"
LONE_TIMEOUT = 30
# Other labs share this machine: under their load, one installer took 4 minutes from its initrd to its lease.
AGENT_TIMEOUT = 600


def _pxe_client_loop(client):
    # A PXE client that never gives up, as firmware retrying its DHCP does: udhcpc with a PXE vendor class, in a loop.
    return client.popen(["sh", "-c", "while :; do udhcpc -i %s -s %s -V PXEClient:Arch:00000:UNDI:002001 -n -q -t 2 -T 1; sleep 1; done"
                         % (client.iface, UDHCPC_SCRIPT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _from_nixie(packets, server_ip):
    return [packet for packet in packets if IP in packet and packet[IP].src == server_ip]


@pytest.mark.parametrize("lab", [{"routed": True}], indirect=True)
def test_machines_behind_a_relay_install_and_a_relay_that_skips_nixie_fails_its_host_alone(lab, installer, tmp_path):
    bios = lab.add_machine("nixie-01", "52:54:00:5f:00:01", firmware="bios", nic="e1000")
    uefi = lab.add_machine("nixie-02", "52:54:00:5f:00:02", firmware="uefi", nic="virtio-native")
    stranger = lab.add_client("stranger", "52:54:00:5f:00:99")
    lone = lab.add_client("lone", "52:54:00:5f:00:03")
    lab.start_power_daemon()
    wol = {"wol": {"broadcast": lab.routed.broadcast4}}
    run = netboot.with_stand_in(netboot.prepare(lab, installer, [bios, uefi], tmp_path, hosts={
        "nixie-01": wol, "nixie-02": wol, "nixie-03": dict(wol, mac_address=lone.mac)}), installer)
    server_ip, relay_ip = str(lab.ctl_ip4), str(lab.routed.gateway4)

    with Capture(lab, "servers-side", DHCP_ONLY) as upstream, \
            Capture(lab, "machines-side", DHCP_ONLY, netns=lab.machine_ns, interface=lab.machine_bridge) as downstream:
        _pxe_client_loop(stranger)
        started = time.monotonic()
        run.environment["ANSIBLE_STRATEGY"] = "free"
        first = netboot.provision(lab, run, limit="nixie-01,nixie-02",
                                  extra_vars={"nixie_batch_size": 2, "nixie_agent_timeout": AGENT_TIMEOUT, "nixie_ipxe_dir": str(netboot.CURRENT_IPXE)})
        del run.environment["ANSIBLE_STRATEGY"]
    print(first.stdout[-5000:])
    recap = netboot.recap(first.stdout)
    assert "failed=0" in recap["nixie-01"] and "failed=0" in recap["nixie-02"], recap

    leases = lab.site_dhcp.leases()
    for machine in (bios, uefi):
        assert leases[machine.mac] in lab.routed.subnet4, leases
    records = run.stand_in_records()
    assert sorted(run.stand_in_hosts()) == ["nixie-01", "nixie-02"], records
    for record, host in zip(records, run.stand_in_hosts()):
        assert record["argv"][1:] == run.stand_in_command(host, leases[{"nixie-01": bios, "nixie-02": uefi}[host].mac])
    for machine in (bios, uefi):
        machine.wait_for_serial(r"NIXIELAB: installed " + run.toplevel(machine.name), timeout=5)

    # Woken across the router: the controller's directed broadcast, forwarded onto the machines' segment as a broadcast.
    for machine in (bios, uefi):
        woken = [packet for packet in lab.power_daemon.packets(machine.mac) if packet["action"] == "started"]
        assert woken and woken[0]["destination"] == lab.routed.broadcast4 and woken[0]["source"].startswith(server_ip + ":"), woken

    events = run.events()
    for machine, firmware_clients in ((bios, {True}), (uefi, {False, True})):
        offers = [event for event in events if event["mac"] == machine.mac and event["step"] in ("dhcp_offer", "dhcp_ack") and event["port"] == 67]
        # Every answer on port 67 went to the relay, the firmware's (EDK2) and iPXE's alike, and named the relay's port.
        assert offers and {event["to"] for event in offers} == {"%s:67" % relay_ip}, offers
        assert {event["relay"] for event in offers} == {relay_ip} and {event["circuit_id"] for event in offers} == {"down0"}, offers
        assert {event["ipxe"] for event in offers} >= firmware_clients, offers
        routed = [event for event in events if event["mac"] == machine.mac and event["step"] in ("tftp_done", "script", "kernel", "initrd", "phone_home")]
        assert {event["step"] for event in routed} >= {"script", "kernel", "initrd", "phone_home"} | ({"tftp_done"} if machine is uefi else set()), routed
        assert {event["ip"] for event in routed} == {str(leases[machine.mac])}, routed

        # On the servers' side: the relay's requests carry its option 82, and Nixie's offers echo it, to the relay.
        relayed = [packet for packet in upstream.dhcp(machine.mac) if packet[BOOTP].op == 1]
        assert relayed and all(packet[BOOTP].giaddr == relay_ip and dhcp_options(packet).get(OPTION_RELAY_AGENT) for packet in relayed)
        answers = _from_nixie(upstream.dhcp(machine.mac, DHCP_OFFER), server_ip)
        assert answers and all(packet[IP].dst == relay_ip and packet[BOOTP].giaddr == relay_ip for packet in answers), answers
        assert all(dhcp_options(packet)[OPTION_RELAY_AGENT] == CIRCUIT for packet in answers), [dhcp_options(packet) for packet in answers]
        # On the machines' side: the router passed Nixie's offer on (siaddr Nixie's, the boot file), option 82 stripped.
        passed = [packet for packet in downstream.dhcp(machine.mac, DHCP_OFFER) if packet[BOOTP].siaddr == server_ip and boot_file(packet)]
        assert passed and all(packet[IP].src == relay_ip and vendor_class(packet) == b"PXEClient" for packet in passed), passed
        assert not any(OPTION_RELAY_AGENT in dhcp_options(packet) for packet in passed)

    # The unlisted PXE client behind the relay: leased by the site, never answered by Nixie.
    assert stranger.mac in leases
    assert upstream.dhcp(stranger.mac) and not _from_nixie(upstream.dhcp(stranger.mac), server_ip)
    assert {event.get("reason") for event in events if event["mac"] == stranger.mac} <= {"unknown MAC address"}

    print("two machines behind the relay, off to installed: %.0f s" % (time.monotonic() - started))
    lab.routed.start_relay([str(lab.bridge_ip4)])
    _pxe_client_loop(lone)
    started = time.monotonic()
    skipped = netboot.provision(lab, run, limit="nixie-01,nixie-03", timeout=600, extra_vars={"nixie_agent_timeout": LONE_TIMEOUT})
    print("the relay that forwards to the site only, nixie-03 failed: %.0f s" % (time.monotonic() - started))
    recap = netboot.recap(skipped.stdout)
    assert "failed=0" in recap["nixie-01"] and "failed=1" in recap["nixie-03"], skipped.stdout[-4000:]
    assert "nixie-01 is installed at %s: skipped, it is installed" % leases[bios.mac] in skipped.stdout
    assert ("no DHCP request from %s reached the boot server; is the relay forwarding to %s?" % (lone.mac, server_ip)) in skipped.stdout, \
        skipped.stdout[-4000:]
    # The relay did relay the lone client's DHCP: to the site only, which leased it an address.
    assert lone.mac in lab.site_dhcp.leases()
    relay_log = lab.routed.relay_log()
    assert "Forwarded BOOTREQUEST for %s to %s" % (lone.mac, lab.bridge_ip4) in relay_log and server_ip not in relay_log
    # Its only events are the controller's own (its Wake-on-LAN, its release): nothing the machine sent reached Nixie.
    lone_events = [event for event in run.events() if event["mac"] == lone.mac]
    assert lone_events and {event.get("ip") for event in lone_events} == {server_ip}, lone_events
    assert not [event for event in lone_events if event["step"].startswith(("dhcp", "tftp"))], lone_events
    assert len(run.stand_in_records()) == len(records)
