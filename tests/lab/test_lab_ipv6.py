"""IPv6 single-stack provisioning through Nixie: the bridge and the controller have no IPv4 address, the site runs RA
and stateful DHCPv6 (addresses only; SLAAC beside it). Wake-on-LAN goes to ff02::1.

1. An OVMF machine whose firmware offers UEFI HTTP boot goes from WoL to `installed`: EDK2 takes Nixie's proxy Advertise
   (boot file URL, no address) beside the site's, loads ipxe.efi over HTTP, iPXE runs Nixie's autoexec.ipxe from beside
   it, configures IPv6 from the site and chains its script; the agent phones home over IPv6, the install role runs the
   nixos-anywhere stand-in against the IPv6 address, and the status check finds the installed system there.
2. EDK2's own PXEv6 client takes Nixie's proxy Advertise, asks Nixie's port 4011 for the boot file, and fetches ipxe.efi
   over TFTP on IPv6. That iPXE cannot go further: in stateful DHCPv6 (the site's RA has the M flag) it ignores every
   Advertise without an address, and a TFTP-loaded iPXE has no URL to look for autoexec.ipxe beside (README, "IPv6").
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time

import pytest
from ansible_collections.nixie.provision.plugins.module_utils._discover import eui64_link_local
from nixielab import netboot
from nixielab.capture import Capture
from nixielab.playbook import run_playbook
from scapy.layers.dhcp6 import DHCP6_Advertise, DHCP6_Reply, DHCP6_Solicit, DHCP6OptIA_NA
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

pytestmark = pytest.mark.lab

IPV6_ONLY = {"ipv4": False, "ipv6": True}
# No PXE at all: OVMF tries HTTPv4 (a minute without a DHCPv4 answer), then HTTPv6.
EDK2_HTTP_BOOT_ONLY = {"opt/org.tianocore/IPv4PXESupport": "no", "opt/org.tianocore/IPv6PXESupport": "no"}
# OVMF's boot order is iPXE-less here (virtio-native): PXEv4, PXEv6, HTTPv4, HTTPv6; without PXEv4, PXEv6 is first.
EDK2_PXE6_FIRST = {"opt/org.tianocore/IPv4PXESupport": "no"}


@pytest.mark.parametrize("lab", [IPV6_ONLY], indirect=True)
def test_ovmf_http_boot_machine_is_provisioned_on_an_ipv6_only_network(lab, installer, tmp_path):
    assert lab.ctl_ip4 is None and lab.bridge_ip4 is None
    machine = lab.add_machine("nixie-01", "52:54:00:3b:00:06", firmware="uefi", nic="virtio-native", boot_order="disk-first",
                              fw_cfg=EDK2_HTTP_BOOT_ONLY)
    lab.start_power_daemon()
    run = netboot.with_stand_in(netboot.prepare(lab, installer, [machine], tmp_path), installer)
    result = netboot.provision(lab, run, extra_vars={"nixie_ipxe_dir": str(netboot.CURRENT_IPXE)})
    print(result.stdout[-6000:])
    assert "failed=0" in netboot.recap(result.stdout)[machine.name], result.stdout[-6000:]

    events = [event for event in run.events() if event["mac"] in (machine.mac, None)]
    steps = [event["step"] for event in events]
    for step in ("dhcp_offer", "autoexec", "script", "kernel", "initrd", "phone_home", "marked_installed"):
        assert step in steps, steps
    print("OVMF, disk first: from the post-install reboot to SSH %s s" % netboot.host_recap(result.stdout, machine.name)["seconds"]["reboot"])
    offer = next(event for event in events if event["step"] == "dhcp_offer")
    assert offer["client"] == "HTTPClient" and offer["boot_file"] == "http://[%s]:8080/ipxe/ipxe.efi" % lab.ctl_ip6, offer
    phone_home = next(event for event in events if event["step"] == "phone_home")
    reported = ipaddress.IPv6Address(phone_home["report"]["ip"])
    assert reported in lab.subnet6 and phone_home["ip"] == str(reported), phone_home

    (record,) = run.stand_in_records()
    # The host's name as the target, its IPv6 address only in ssh's HostName: no tool has to parse the literal.
    assert record["argv"][1:] == run.stand_in_command(machine.name, str(reported)), record
    # Every ssh the stand-in ran (the disko script, the install's dd, the reboot) went through the ssh that pins the
    # agent's keys under the alias and reached the IPv6 address by HostName: the machine then boots what they wrote.
    assert record["ssh"] == run.pinning_ssh(machine.name), record
    machine.wait_for_serial(r"NIXIELAB: installed /nix/store/\S+-nixos-system-%s" % machine.name, timeout=5)
    # The installed system may answer SSH on its link-local address before SLAAC has configured the global one again.
    # The recap's keys come sorted (address, boot_override, host, ...): its address is the one before the host's name.
    recap_address = re.search(r'"address": "([^"]+)",(?:\s+"[a-z_]+": [^\n]*,)*?\s+"host": "%s",' % machine.name, result.stdout)
    assert recap_address, result.stdout[-3000:]
    assert recap_address.group(1) in (str(reported), "%s%%%s" % (eui64_link_local(machine.mac), lab.ctl_if)), result.stdout[-3000:]
    assert re.search(r'"state": "installed"', result.stdout)


@pytest.mark.parametrize("lab", [IPV6_ONLY], indirect=True)
def test_ovmf_pxev6_boots_ipxe_through_nixie_on_an_ipv6_only_network(lab, installer, tmp_path):
    assert lab.ctl_ip4 is None and lab.bridge_ip4 is None
    machine = lab.add_machine("uefi6", "52:54:00:3b:00:01", firmware="uefi", nic="virtio-native", fw_cfg=EDK2_PXE6_FIRST)
    lab.start_power_daemon()
    run = netboot.prepare(lab, installer, [machine], tmp_path)
    run.extra_vars["nixie_agent_timeout"] = 60
    outcome = {}

    def play():
        result = run_playbook(lab, netboot.NETBOOT_PLAYBOOK, run.inventory, extra_vars=run.extra_vars, timeout=600,
                              environment=run.environment, check=False)
        outcome["output"] = result.stdout + result.stderr

    with Capture(lab, "netboot6") as capture:
        started = time.monotonic()
        player = threading.Thread(target=play)
        player.start()
        solicits = capture.wait_for(lambda: [p for p in capture.packets() if DHCP6_Solicit in p and p[Ether].src == machine.mac],
                                    timeout=240, what="the machine's DHCPv6 Solicit")
        print("WoL to first Solicit: %.0f s" % (time.monotonic() - started))
        advertise = capture.wait_for(lambda: [p for p in capture.packets() if DHCP6_Advertise in p and p[Ether].dst == machine.mac
                                              and p[Ether].src != lab_site_mac(capture, machine)], timeout=30, what="Nixie's Advertise")
        assert DHCP6OptIA_NA not in advertise[0], "a proxy Advertise must not offer an address"
        assert advertise[0][IPv6].dst == solicits[0][IPv6].src and advertise[0][UDP].dport == 546
        # scapy decodes DHCPv6 on ports 546/547 only: the port-4011 exchange is parsed by hand.
        request = capture.wait_for(lambda: [p for p in capture.packets() if UDP in p and p[UDP].dport == 4011], timeout=60,
                                   what="EDK2's boot-file Request to port 4011")
        assert request[0][IPv6].dst == str(lab.ctl_ip6) and bytes(request[0][UDP].payload)[0] == 3  # Request
        reply = capture.wait_for(lambda: [p for p in capture.packets() if UDP in p and p[UDP].sport == 4011 and p[IPv6].src == str(lab.ctl_ip6)],
                                 timeout=10,
                                 what="Nixie's port-4011 Reply")
        assert DHCP6_Reply(bytes(reply[0][UDP].payload)).msgtype == 7 and b"tftp://[%s]/ipxe.efi" % str(lab.ctl_ip6).encode() in bytes(reply[0])
        print("WoL to boot-file Reply: %.0f s" % (time.monotonic() - started))
        machine.wait_for_serial(r"NBP file downloaded successfully", timeout=120)
        print("WoL to ipxe.efi over TFTP/IPv6: %.0f s" % (time.monotonic() - started))
        # Each Request's Reply goes out three times, for EDK2 may start listening only after the first went by;
        # the last repeat leaves 1 s after the Request, possibly after the download.
        capture.wait_for(lambda: _boot_service_replies(capture, lab)[2:], timeout=5, what="third copy of the port-4011 Reply")
        requests = [p for p in capture.packets() if UDP in p and p[UDP].dport == 4011 and p[IPv6].dst == str(lab.ctl_ip6)]
        replies = _boot_service_replies(capture, lab)
        assert len(replies) == 3 * len(requests) and len(set(replies)) == len(requests), (len(requests), len(replies))
        machine.wait_for_serial(r"iPXE 1\.", timeout=60)
        player.join()
    print(outcome.get("output", "")[-2000:])
    steps = steps_of(run, machine.mac)
    assert {"dhcp_offer", "dhcp_ack"} <= set(steps), steps
    # EDK2 fetches from a second leased address, not the one of its port-4011 Request: the event may lack the MAC.
    tftp = [event for event in run.events() if event["step"] == "tftp_done"]
    assert tftp and tftp[0]["ok"] and tftp[0]["file"] == "ipxe.efi" and ":" in tftp[0]["ip"], tftp


def _boot_service_replies(capture, lab):
    """The payloads of the port-4011 Replies the capture holds so far."""
    return [bytes(p[UDP].payload) for p in capture.packets() if UDP in p and p[UDP].sport == 4011 and p[IPv6].src == str(lab.ctl_ip6)]


def lab_site_mac(capture, machine):
    """The site server's MAC: the source of Advertises that offer the machine an address."""
    for packet in capture.packets():
        if DHCP6_Advertise in packet and DHCP6OptIA_NA in packet and packet[Ether].dst == machine.mac:
            return packet[Ether].src
    return None


def steps_of(run, mac):
    return [event["step"] for event in run.events() if event["mac"] == mac]
