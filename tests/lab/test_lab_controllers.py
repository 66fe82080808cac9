"""Per-segment controllers in one provision run (issue 15, part 2), in the routed lab (nixielab.routed).

Two machines sit on the routed machines' segment. nixie-01's controller is `localhost` (the controller's namespace,
across the router, through the relay); nixie-02's is `ctl2`, a second controller: a namespace on the machines' own
segment with its own sshd, reached by the playbook over SSH like any managed host. One ansible-playbook
nixie.provision.provision run starts one boot server on each controller, each for its own host alone; both machines go
from off to `installed` (stand-in nixos-anywhere), each served by its own controller's server (its events are in that
controller's run directory only). nixie-03's controller `ctl3` cannot be reached: it fails alone, naming it, and the
recap groups the three hosts by controller.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import sys
import time
from pathlib import Path

import pytest
from nixielab import netboot
from nixielab.net import netns_id

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract

pytestmark = pytest.mark.lab

AGENT_TIMEOUT = 600


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _python_with(environment: dict, path: Path) -> Path:
    # The controller's interpreter over SSH: the same venv, with the offline Nix settings and the stand-in's (first on
    # PATH, with its log and image) that a login does not carry.
    exports = " ".join("%s='%s'" % (name, environment[name]) for name in ("PATH", "NIX_CONF_DIR", "NIXIE_STANDIN_LOG", "NIXIE_STANDIN_IMAGE"))
    path.write_text("#!/bin/sh\nexport %s\nexec %s \"$@\"\n" % (exports, sys.executable))
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("lab", [{"routed": True}], indirect=True)
def test_two_controllers_each_serve_their_own_machine_and_an_unreachable_one_fails_its_host_alone(lab, installer, tmp_path):
    near = lab.add_machine("nixie-01", "52:54:00:5e:00:21", firmware="bios", nic="e1000")
    far = lab.add_machine("nixie-02", "52:54:00:5e:00:22", firmware="bios", nic="e1000")
    lab.start_power_daemon()
    run = netboot.with_stand_in(netboot.prepare(lab, installer, [near, far], tmp_path, hosts={
        "nixie-01": {"wol": {"broadcast": lab.routed.broadcast4}}, "nixie-03": {"mac_address": "52:54:00:5e:00:23"}}), installer)
    ctl2 = lab.add_segment_controller("ctl2", Path(str(run.key) + ".pub"))
    # As a site's firewall may: ctl2's boot server is for its own segment, so only what runs on ctl2 reaches it.
    lab.routed.refuse_tcp_to(str(ctl2.ip4), contract.DEFAULT_HTTP_PORT)
    run_dirs = {"nixie-01": tmp_path / "run", "nixie-02": tmp_path / "run-ctl2", "nixie-03": tmp_path / "run-ctl3"}
    # Per host now, since each controller has its own interface and run directory.
    del run.extra_vars["nixie_interface"], run.extra_vars["nixie_run_dir"]
    ssh = {"ansible_user": "root", "ansible_ssh_private_key_file": str(run.key), "ansible_pipelining": True,
           "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}
    controllers = {
        "all": {"hosts": {
            "ctl2": dict(ssh, ansible_host=str(ctl2.ip4), ansible_python_interpreter=str(_python_with(run.environment, tmp_path / "ctl2-python"))),
            # Nothing listens there.
            "ctl3": dict(ssh, ansible_host=str(ctl2.ip4), ansible_port=9)}},
        "nixie": {"hosts": {
            "nixie-01": {"nixie_interface": lab.ctl_if, "nixie_run_dir": str(run_dirs["nixie-01"])},
            "nixie-02": {"nixie_controller": "ctl2", "nixie_interface": ctl2.iface, "nixie_run_dir": str(run_dirs["nixie-02"])},
            "nixie-03": {"nixie_controller": "ctl3", "nixie_interface": ctl2.iface, "nixie_run_dir": str(run_dirs["nixie-03"])}}}}
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "nixie.yml").write_text(run.inventory.read_text().replace("path: hosts.json", "path: ../hosts.json"))
    (inventory / "controllers.yml").write_text(json.dumps(controllers))

    started = time.monotonic()
    run.environment["ANSIBLE_STRATEGY"] = "free"
    done = netboot.provision(lab, dataclasses.replace(run, inventory=inventory), extra_vars={"nixie_batch_size": 3, "nixie_agent_timeout": AGENT_TIMEOUT})
    seconds = time.monotonic() - started
    print(done.stdout[-6000:])
    print("two controllers, one machine each: %.0f s" % seconds)
    output = done.stdout + done.stderr
    recap = netboot.recap(done.stdout)
    assert "failed=0" in recap["nixie-01"] and "failed=0" in recap["nixie-02"], recap
    assert "failed=1" in recap["nixie-03"] and "unreachable=0" in recap["nixie-03"], recap
    assert "controller ctl3 of nixie-03 cannot be reached: " in output, output
    grouped, dummy = json.JSONDecoder().raw_decode(output, output.index('"controllers": ') + len('"controllers": '))
    assert grouped == {"localhost": {"nixie-01": "installed"}, "ctl2": {"nixie-02": "installed"}, "ctl3": {"nixie-03": "failed"}}, output

    # Each machine was served by its own controller's server, and by no other.
    for name, machine, other in (("nixie-01", near, far), ("nixie-02", far, near)):
        steps = [event["step"] for event in _events(run_dirs[name]) if event.get("mac") == machine.mac]
        assert {"dhcp_offer", "script", "kernel", "initrd", "phone_home", "marked_installed"} <= set(steps), (name, steps)
        assert not [event for event in _events(run_dirs[name]) if event.get("mac") == other.mac and event["step"] != "dhcp_ignored"]
    assert not _events(run_dirs["nixie-03"])
    phone_home = [event for event in _events(run_dirs["nixie-02"]) if event["step"] == "phone_home"]
    assert phone_home and ipaddress.ip_address(phone_home[0]["ip"]) in lab.routed.subnet4, phone_home

    leases = lab.site_dhcp.leases()
    records = run.stand_in_records()
    assert sorted(run.stand_in_hosts()) == ["nixie-01", "nixie-02"], records
    for record, host in zip(records, run.stand_in_hosts()):
        # Each host's files are in its own controller's run directory, and its nixos-anywhere ran there.
        own = dataclasses.replace(run, extra_vars=dict(run.extra_vars, nixie_run_dir=str(run_dirs[host])))
        assert record["argv"][1:] == own.stand_in_command(host, leases[{"nixie-01": near, "nixie-02": far}[host].mac])
        assert record["netns"] == netns_id({"nixie-01": lab.ctl_ns, "nixie-02": ctl2.netns}[host]), (host, record)
    # The wait for nixie-02's agent, its status checks, its install and its release all talked to ctl2's server from ctl2.
    assert lab.routed.refused_tcp() == 0
    for machine in (near, far):
        machine.wait_for_serial(r"NIXIELAB: installed " + run.toplevel(machine.name), timeout=5)
