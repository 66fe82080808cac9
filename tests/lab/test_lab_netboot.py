"""End to end through Nixie's own boot server: hosts.json -> installer built by `nix` from the fixture flake ->
nixie.provision.server -> Wake-on-LAN -> SeaBIOS (QEMU's iPXE ROM) and OVMF (EDK2's own PXE, then ipxe.efi over
TFTP) netboot the test installer through Nixie's ProxyDHCP/TFTP/HTTP -> the real nixie agent phones home -> the
addresses and host keys come back as facts, and SSH with the pinned key works. A machine whose MAC is not in
hosts.json PXE-boots on the same bridge and gets nothing from Nixie."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from pathlib import Path

import pytest
from nixielab import append_cpio, magic_packet
from nixielab.capture import Capture
from nixielab.playbook import run_playbook, write_inventory
from nixielab.processes import REPO_ROOT

pytestmark = pytest.mark.lab

AGENT = REPO_ROOT / "agent" / "nixie-agent"
NETBOOT_PLAYBOOK = REPO_ROOT / "playbooks" / "netboot.yml"
SERVER_IP = "10.213.0.1"


def _fixture_flake_helper():
    path = REPO_ROOT / "tests" / "fixtures" / "flake-installer" / "prepare.py"
    spec = importlib.util.spec_from_file_location("flake_installer_prepare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _cached_facts(facts_dir: Path, host: str) -> dict:
    """The facts Ansible's jsonfile cache kept for `host` (ansible-core 2.19 names it s1_<host> and wraps the JSON)."""
    (path,) = facts_dir.glob("*_%s" % host) or [facts_dir / host]
    data = json.loads(path.read_text())
    return json.loads(data["__payload__"]) if "__payload__" in data else data


def _ssh(lab, key: Path, known_hosts: Path, address: str, command: str) -> subprocess.CompletedProcess:
    return lab.run_ctl(["ssh", "-i", str(key), "-o", "UserKnownHostsFile=%s" % known_hosts, "-o", "StrictHostKeyChecking=yes",
                        "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "root@%s" % address, command],
                       capture_output=True, text=True, timeout=60)


def test_two_machines_netboot_through_nixie_and_a_stranger_gets_nothing(lab, installer, tmp_path, monkeypatch):
    bios = lab.add_machine("bios", "52:54:00:3a:00:01", firmware="bios", nic="e1000")
    uefi = lab.add_machine("uefi", "52:54:00:3a:00:02", firmware="uefi", nic="virtio-native")
    stranger = lab.add_machine("stranger", "52:54:00:3a:00:03", firmware="bios", nic="e1000")
    lab.start_power_daemon()

    # The real agent rides in the test installer as a boot hook; nix builds the "installer" from the fixture flake.
    initrd = append_cpio(installer.initrd, {"/etc/nixie/hooks.d/50-nixie-agent": AGENT}, tmp_path / "initrd.gz")
    prepare = _fixture_flake_helper()
    flake = prepare.materialise(tmp_path / "flake", installer.kernel, initrd, installer.cmdline)
    for name, value in prepare.offline_nix_env(tmp_path / "nix-conf").items():
        monkeypatch.setenv(name, value)
    facts_dir = tmp_path / "facts"
    monkeypatch.setenv("ANSIBLE_CACHE_PLUGIN", "jsonfile")
    monkeypatch.setenv("ANSIBLE_CACHE_PLUGIN_CONNECTION", str(facts_dir))
    key = tmp_path / "deployer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deployer@nixie-test", "-f", str(key)], check=True)
    inventory = write_inventory(tmp_path, [bios, uefi])
    with inventory.open("a", encoding="utf-8") as handle:
        handle.write("flake: %s\n" % flake)
    run_dir = tmp_path / "run"

    with Capture(lab, "netboot") as capture:
        started = time.monotonic()
        output = run_playbook(lab, NETBOOT_PLAYBOOK, inventory, timeout=420, extra_vars={
            "nixie_interface": lab.ctl_if, "nixie_run_dir": str(run_dir), "nixie_authorized_key_file": str(key) + ".pub",
            "nixie_agent_timeout": 300, "nixie_keep_server": True,
        }).stdout
        boot_seconds = time.monotonic() - started
        print("netboot playbook: %.0f s (nix build, server, WoL, two machines to phone-home)" % boot_seconds)

        leases = lab.site_dhcp.leases()
        for machine in (bios, uefi):
            facts = _cached_facts(facts_dir, machine.name)
            address = facts["nixie_ip"]
            # The site's DHCP server gave the address; Nixie only learned it from the agent.
            assert address == str(leases[machine.mac]), (machine.name, address, leases)
            assert machine.mac in facts["nixie_agent"]["macs"]
            assert "%s (%s) is at %s" % (machine.name, machine.mac, address) in output
            known_hosts = tmp_path / ("known_hosts-%s" % machine.name)
            known_hosts.write_text("\n".join(facts["nixie_known_hosts"]) + "\n")
            assert facts["nixie_known_hosts"] and all(line.startswith(address + " ssh-") for line in facts["nixie_known_hosts"])
            # The host key printed on the machine's own console is the one the agent reported.
            console_key = machine.wait_for_serial(r"NIXIELAB: hostkey (ssh-\S+ \S+)", timeout=5).group(1)
            assert any(console_key in line for line in facts["nixie_known_hosts"])
            answer = _ssh(lab, key, known_hosts, address, "cat /sys/class/net/eth0/address")
            assert answer.returncode == 0, answer.stderr
            assert answer.stdout.strip() == machine.mac

        steps = {}
        for event in _events(run_dir):
            steps.setdefault(event["mac"], []).append(event["step"])
        for machine in (bios, uefi):
            assert {"dhcp_offer", "script", "kernel", "initrd", "phone_home"} <= set(steps[machine.mac]), steps[machine.mac]
        # EDK2's own PXE client is not iPXE: it chainloads ipxe.efi over Nixie's TFTP first.
        assert "tftp_done" in steps[uefi.mac], steps[uefi.mac]

        # Two machines at a time on this 2-core host: the stranger boots once the others are off.
        bios.stop()
        uefi.stop()
        lab.send_wol(magic_packet(stranger.mac))
        discovers = capture.wait_for(lambda: capture.pxe_discovers(stranger.mac), timeout=60, what="the stranger's PXE DISCOVER")
        assert discovers
        time.sleep(10)  # iPXE retries at 1, 3 and 7 s: long enough for any answer Nixie would give
        from_nixie = [packet for packet in capture.dhcp(stranger.mac) if packet["IP"].src == SERVER_IP]
        assert from_nixie == [], "Nixie answered a MAC it was not given"
    stranger_events = [event for event in _events(run_dir) if event["mac"] == stranger.mac]
    assert stranger_events and {event["step"] for event in stranger_events} == {"dhcp_ignored"}, stranger_events
    assert "NIXIELAB: ready" not in stranger.serial_text()

    stop = run_playbook(lab, REPO_ROOT / "tests" / "lab" / "nixielab" / "playbooks" / "server-stop.yml", inventory,
                        extra_vars={"nixie_run_dir": str(run_dir)})
    assert "changed=1" in stop.stdout
