"""End to end through Nixie's own boot server: hosts.json -> installer built by `nix` from the fixture flake ->
nixie.provision.server -> Wake-on-LAN -> SeaBIOS (QEMU's iPXE ROM) and OVMF (EDK2's own PXE, then ipxe.efi over
TFTP) netboot the test installer through Nixie's ProxyDHCP/TFTP/HTTP -> the real nixie agent phones home -> the
addresses and host keys come back as facts, and SSH with the pinned key works. A machine whose MAC is not in
hosts.json PXE-boots on the same bridge and gets nothing from Nixie.

Then the OVMF machine, marked installed as the install module would, boots once more with the network first. Its iPXE
(Debian 12's, from 2019) cannot boot a UEFI disk itself: the local-boot script reports that and restarts the machine,
and the boot server leaves its firmware unanswered from then on, so that the firmware goes on to its own disk entry."""

from __future__ import annotations

import time

import pytest
from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract, daemon
from ansible_collections.nixie.provision.plugins.module_utils._bootd.runfiles import read_controller_secret
from nixielab import magic_packet, netboot
from nixielab.capture import Capture
from nixielab.playbook import run_playbook
from nixielab.processes import REPO_ROOT

pytestmark = pytest.mark.lab

SERVER_IP = "10.213.0.1"
STOP_PLAYBOOK = REPO_ROOT / "tests" / "lab" / "nixielab" / "playbooks" / "server-stop.yml"


def _boot_installed_uefi_machine_whose_ipxe_cannot_boot_its_disk(lab, run, uefi):
    # As the install module tells the server, through the contract's route and the run's controller secret.
    secret, base = read_controller_secret(str(run.run_dir)), daemon.read_state(str(run.run_dir))["http_url"]
    status, body = lab.curl_ctl("-X", "POST", "-H", "%s: %s" % (contract.CONTROLLER_SECRET_HEADER, secret), "-H", "Content-Type: application/json",
                                "-d", '{"installed": true}', base + contract.host_route(uefi.mac, contract.HOST_INSTALLED_ROUTE))
    assert status == 200, body
    seen = len(run.events())
    uefi.start()
    uefi.wait_for_serial(r"Boot from SAN device 0x00 failed", timeout=180)

    def own_events():
        return [event for event in run.events()[seen:] if event["mac"] == uefi.mac]

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(event["step"] == "dhcp_ignored" and "client" in event for event in own_events()):
        time.sleep(1)
    steps = [event["step"] for event in own_events()]
    assert steps.index("boot_local") < steps.index("local_boot_failed") < steps.index("dhcp_ignored"), steps
    after = own_events()[steps.index("local_boot_failed"):]
    assert not [event for event in after if event["step"] in ("dhcp_offer", "boot_local", "tftp_start")], steps
    # Each of its boot requests from then on is left unanswered, for that reason (its installer's plain DHCP has no "client").
    boot_requests = [event for event in after if event["step"] == "dhcp_ignored" and "client" in event]
    assert boot_requests and all("cannot boot its disk" in event["reason"] for event in boot_requests), after
    # The firmware restarted: its PXEv4 entry starts over, now with no offer from Nixie.
    assert uefi.serial_text().count(">>Start PXE over IPv4") >= 2
    uefi.stop()


def test_two_machines_netboot_through_nixie_and_a_stranger_gets_nothing(lab, installer, tmp_path):
    bios = lab.add_machine("bios", "52:54:00:3a:00:01", firmware="bios", nic="e1000")
    uefi = lab.add_machine("uefi", "52:54:00:3a:00:02", firmware="uefi", nic="virtio-native")
    stranger = lab.add_machine("stranger", "52:54:00:3a:00:03", firmware="bios", nic="e1000")
    lab.start_power_daemon()
    run = netboot.prepare(lab, installer, [bios, uefi], tmp_path, keep_server=True)

    with Capture(lab, "netboot") as capture:
        started = time.monotonic()
        output = netboot.run(lab, run)
        print("netboot playbook: %.0f s (nix build, server, WoL, two machines to phone-home)" % (time.monotonic() - started))

        leases = lab.site_dhcp.leases()
        for machine in (bios, uefi):
            facts = run.facts(machine.name)
            address = facts["nixie_ip"]
            # The site's DHCP server gave the address; Nixie only learned it from the agent.
            assert address == str(leases[machine.mac]), (machine.name, address, leases)
            assert machine.mac in facts["nixie_agent"]["macs"]
            assert "%s (%s) is at %s" % (machine.name, machine.mac, address) in output
            assert facts["nixie_known_hosts"] and all(line.startswith(address + " ssh-") for line in facts["nixie_known_hosts"])
            # The host key printed on the machine's own console is the one the agent reported.
            console_key = machine.wait_for_serial(r"NIXIELAB: hostkey (ssh-\S+ \S+)", timeout=5).group(1)
            assert any(console_key in line for line in facts["nixie_known_hosts"])
            known_hosts = tmp_path / ("known_hosts-%s" % machine.name)
            known_hosts.write_text("\n".join(facts["nixie_known_hosts"]) + "\n")
            answer = netboot.ssh(lab, run, known_hosts, address, "cat /sys/class/net/eth0/address")
            assert answer.returncode == 0, answer.stderr
            assert answer.stdout.strip() == machine.mac
            # A known_hosts file holding another key must make SSH refuse: the pinning is real.
            other = tmp_path / "known_hosts-other"
            deployer_key = " ".join(run.key.with_suffix(".pub").read_text().split()[:2])
            other.write_text("%s %s\n" % (address, deployer_key))
            assert netboot.ssh(lab, run, other, address, "true").returncode != 0

        steps = {}
        for event in run.events():
            steps.setdefault(event["mac"], []).append(event["step"])
        for machine in (bios, uefi):
            assert {"dhcp_offer", "script", "kernel", "initrd", "phone_home"} <= set(steps[machine.mac]), steps[machine.mac]
        # EDK2's own PXE client is not iPXE: it chainloads ipxe.efi over Nixie's TFTP first.
        assert "tftp_done" in steps[uefi.mac], steps[uefi.mac]

        # Two machines at a time on this 2-core host: the stranger boots once the others are off.
        bios.stop()
        uefi.stop()
        lab.send_wol(magic_packet(stranger.mac))
        assert capture.wait_for(lambda: capture.pxe_discovers(stranger.mac), timeout=60, what="the stranger's PXE DISCOVER")
        time.sleep(10)  # iPXE retries at 1, 3 and 7 s: long enough for any answer Nixie would give
        from_nixie = [packet for packet in capture.dhcp(stranger.mac) if packet["IP"].src == SERVER_IP]
        assert from_nixie == [], "Nixie answered a MAC it was not given"
    stranger_events = [event for event in run.events() if event["mac"] == stranger.mac]
    assert stranger_events and {event["step"] for event in stranger_events} == {"dhcp_ignored"}, stranger_events
    assert "NIXIELAB: ready" not in stranger.serial_text()

    stranger.stop()
    _boot_installed_uefi_machine_whose_ipxe_cannot_boot_its_disk(lab, run, uefi)

    stop = run_playbook(lab, STOP_PLAYBOOK, run.inventory, extra_vars={"nixie_run_dir": str(run.run_dir)})
    assert "changed=1" in stop.stdout
