"""Faults during provisioning, in the lab: each fails alone, says why, and a rerun finishes the job.

1. nixie-01 installs; nixie-02's nixos-anywhere fails (the stand-in is told to); nixie-03's Wake-on-LAN is dropped
   (the power daemon does not know it), so it never phones home. Then a rerun installs nixie-02, which is still in
   the installer: the rerun restarts it once its boot server is up, and it netboots afresh.
2. With 10% of the frames on the bridge dropped, the boot server is killed once nixie-01 is being installed and
   nixie-02's agent is trying to phone home (its POSTs are held back on the bridge until then). The installer keeps
   presenting its token, the rerun's boot server accepts it, and both machines end installed. A third run changes
   nothing. (Killed earlier, while the UEFI firmware itself is fetching iPXE, OVMF would end at its boot menu once
   every boot entry failed: only a power cycle gets it out.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from nixielab import netboot

from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.tftp import LAST_BLOCK_UNACKNOWLEDGED

pytestmark = pytest.mark.lab

AGENT_TIMEOUT = 180


def test_one_host_never_phones_home_and_another_fails_to_install(lab, installer, tmp_path):
    good = lab.add_machine("nixie-01", "52:54:00:fa:00:01", firmware="bios", nic="e1000")
    failing = lab.add_machine("nixie-02", "52:54:00:fa:00:02", firmware="bios", nic="virtio")
    silent = lab.add_machine("nixie-03", "52:54:00:fa:00:03", firmware="bios", nic="e1000")
    lab.start_power_daemon(machines=[good, failing])
    run = netboot.with_stand_in(netboot.prepare(lab, installer, [good, failing, silent], tmp_path), installer)
    run.environment["NIXIE_STANDIN_FAIL"] = "nixie-02"

    first = netboot.provision(lab, run, extra_vars={"nixie_agent_timeout": AGENT_TIMEOUT})
    recap = netboot.recap(first.stdout)
    assert "failed=0" in recap["nixie-01"], first.stdout[-4000:]
    assert "failed=1" in recap["nixie-02"] and "failed=1" in recap["nixie-03"], recap
    assert "no phone-home from %s within %d s; last event: nothing yet" % (silent.mac, AGENT_TIMEOUT) in first.stdout
    log = run.run_dir / "nixie-02" / "install.log"
    assert "nixos-anywhere failed (exit 1); log: %s" % log in first.stdout
    assert "fault injected" in log.read_text()
    assert sorted(run.stand_in_hosts()) == ["nixie-01", "nixie-02"]
    assert any(packet["mac"] == silent.mac and packet["action"] == "unknown-mac" for packet in lab.power_daemon.packets()), \
        "the WoL for nixie-03 must have arrived, and been dropped"

    del run.environment["NIXIE_STANDIN_FAIL"]
    scripts = _steps(run, failing, "script")
    rerun = netboot.provision(lab, run, limit="nixie-01,nixie-02")
    recap = netboot.recap(rerun.stdout)
    assert "failed=0" in recap["nixie-01"] and "failed=0" in recap["nixie-02"], rerun.stdout[-4000:]
    assert "nixie-01 is installed at " in rerun.stdout
    assert _steps(run, failing, "script") > scripts, "nixie-02 must have netbooted again from the rerun's server"
    assert sorted(run.stand_in_hosts()) == ["nixie-01", "nixie-02", "nixie-02"]
    failing.wait_for_serial(r"NIXIELAB: installed /nix/store/\S+-nixos-system-nixie-02", timeout=5)


def test_when_every_host_fails_the_report_is_still_written(lab, installer, tmp_path):
    # A machine that is never powered (no VM runs, and its wait for a phone-home fails), and one that the flake lacks.
    silent = lab.add_machine("nixie-03", "52:54:00:fa:00:04", firmware="bios", nic="e1000")
    absent = lab.add_machine("nixie-09", "52:54:00:fa:00:09", firmware="bios", nic="e1000")
    run = netboot.with_stand_in(netboot.prepare(lab, installer, [silent, absent], tmp_path), installer)
    alone = netboot.provision(lab, run, extra_vars={"nixie_agent_timeout": 15})
    recap = netboot.recap(alone.stdout)
    assert alone.returncode != 0 and "failed=1" in recap["nixie-03"] and "failed=1" in recap["nixie-09"], alone.stdout[-4000:]
    # The host the flake lacks fails alone, at its evaluation; the other goes on to be woken and waited for.
    assert "has no nixosConfigurations.nixie-09" in alone.stdout, alone.stdout[-4000:]
    assert "no phone-home from %s within 15 s" % silent.mac in alone.stdout, alone.stdout[-4000:]
    # ansible-playbook runs no later play once every host of a play has failed: the report is not the last play's.
    assert "report: %s" % (run.run_dir / "report.html") in alone.stdout, alone.stdout[-4000:]
    rows = json.loads((run.run_dir / "report.json").read_text())["hosts"]
    assert [(row["host"], row["state"]) for row in rows] == [("nixie-03", "failed")], rows
    # Woken by Wake-on-LAN, it never asked for DHCP.
    assert rows[0]["last_error"] == "released by the controller while at powering_on", rows
    deadline = time.monotonic() + 30
    while (run.run_dir / "server.pid").exists():
        assert time.monotonic() < deadline, "the boot server must end with its last host's release"
        time.sleep(0.5)


def _hold_back_phone_homes(lab, machine):
    # The agent's only POST is its phone-home; iPXE's fetches of the same port are GETs and go through.
    lab.drop_frames("hold", ["ether", "saddr", machine.mac, "tcp", "dport", "8080", "@ih,0,32", "0x504f5354"], priority=-10)


def _steps(run, machine, step):
    return sum(1 for record in run.events() if record["mac"] == machine.mac and record["step"] == step)


def _one_installing_and_one_held_back(lab, run, installing):
    # The stand-in's start, not the phone-home event: by then the play has seen the phone-home too.
    return lab.dropped_frames("hold") > 0 and installing.name in run.stand_in_hosts()


def test_lossy_network_and_a_killed_boot_server(lab, installer, tmp_path):
    machines = [lab.add_machine("nixie-01", "52:54:00:fb:00:01", firmware="bios", nic="virtio"),
                lab.add_machine("nixie-02", "52:54:00:fb:00:02", firmware="uefi", nic="virtio-native", boot_order="disk-first")]
    lab.start_power_daemon()
    lab.drop_one_frame_in(10)
    _hold_back_phone_homes(lab, machines[1])
    run = netboot.with_stand_in(netboot.prepare(lab, installer, machines, tmp_path), installer)
    # Each host on its own (strategy free): nixie-01 goes on to its install while nixie-02 still waits for its agent,
    # and that wait must last until the kill.
    run.environment["ANSIBLE_STRATEGY"] = "free"
    run.extra_vars["nixie_agent_timeout"] = 900

    argv, environment = netboot.provision_command(lab, run)
    with subprocess.Popen(argv, env=environment, cwd=lab.run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as first:
        deadline = time.monotonic() + 900
        while not _one_installing_and_one_held_back(lab, run, machines[0]):
            if time.monotonic() > deadline or first.poll() is not None:
                first.kill()
                pytest.fail("nixie-01 was not installing with nixie-02's phone-home held back:\n%s\npower: %s\n%s" % (
                    first.communicate()[0][-3000:], lab.power_daemon.events(),
                    "\n".join("%s: %s" % (machine.name, machine.serial_text()[-1500:]) for machine in machines)))
            time.sleep(0.5)
        server_pid = json.loads((run.run_dir / "state.json").read_text())["pid"]
        os.kill(server_pid, signal.SIGKILL)
        lab.run_lab(["nft", "delete", "table", "bridge", "hold"], check=True)
        first_output = first.communicate(timeout=1500)[0]
    print(first_output[-3000:])
    # Where a lossy boot's time went: EDK2's TFTP of ipxe.efi took 149 s when each lost block waited out a 1 s timer.
    tftp = [event for event in run.events() if event["step"] == "tftp_done"]
    print("nixie-02 ipxe.efi over TFTP: %s" % ["%.1f s %s" % (event["seconds"], "ok" if event["ok"] else event["error"]) for event in tftp])
    # Mostly once. Twice when iPXE's own DHCP heard no proxy offer in its 2 s (Nixie missed both its DISCOVERs: at 10 % loss,
    # about one boot in a hundred): it then boots nothing and hands back to the firmware, whose next network boot starts over.
    # A load whose last ACK was lost (one in ten) worked for EDK2, which has every block and has gone on to iPXE.
    loaded = [event["seconds"] for event in tftp if event["ok"] or event["error"] == LAST_BLOCK_UNACKNOWLEDGED]
    assert 1 <= len(loaded) <= 2 and max(loaded) < 60, [(event["step"], event) for event in run.events() if event["mac"] == machines[1].mac]
    assert "failed=1" in netboot.recap(first_output)["nixie-02"] and "cannot poll the boot server" in first_output, first_output[-3000:]
    scripts = _steps(run, machines[1], "script")

    second = netboot.provision(lab, run)
    recap = netboot.recap(second.stdout)
    assert all("failed=0" in recap[machine.name] for machine in machines), second.stdout[-5000:]
    for machine in machines:
        machine.wait_for_serial(r"NIXIELAB: installed /nix/store/\S+-nixos-system-%s" % machine.name, timeout=5)
    assert _steps(run, machines[1], "script") == scripts and _steps(run, machines[1], "phone_home") == 1, \
        "nixie-02 must have phoned home with the token the killed server gave it, not booted again"

    third = netboot.provision(lab, run, timeout=600)
    recap = netboot.recap(third.stdout)
    assert all("changed=0" in recap[machine.name] and "failed=0" in recap[machine.name] for machine in machines), recap
    dropped = lab.dropped_frames("lossy")
    print("frames dropped on the bridge: %d" % dropped)
    assert dropped > 50
