"""nixie.provision.installer run as a real Ansible task, building the nixpkgs-free fixture flake with the real `nix`."""

import importlib.util
import json
import os
import shutil
import subprocess
import uuid

import pytest

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "fixtures", "flake-installer", "prepare.py")
_spec = importlib.util.spec_from_file_location("flake_installer_prepare", FIXTURE)
prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare)

KERNEL = b"module test kernel\n" * 32
INITRD = b"module test initrd\n" * 32


@pytest.fixture
def ansible_env(tmp_path_factory):
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0", ANSIBLE_NOCOLOR="1",
               ANSIBLE_DEPRECATION_WARNINGS="0")
    env.update(prepare.offline_nix_env(tmp_path_factory.mktemp("nix-conf")))
    return env


def run_module(env, args, *options):
    """Run the module through `ansible localhost -m`, as a playbook task would, and return its result."""
    command = [shutil.which("ansible"), "localhost", "--one-line", "-m", "nixie.provision.installer", "-a", json.dumps(args)]
    done = subprocess.run(command + list(options), env=env, capture_output=True, text=True, timeout=300, check=False)
    # --one-line prints "localhost | STATUS => {result as JSON}", where a failure's STATUS is "FAILED!".
    status, result = done.stdout.split("=>", 1)
    return dict(json.loads(result), failed="FAILED!" in status)


def test_builds_the_installer_and_is_idempotent(ansible_env, tmp_path):
    flake = prepare.materialise(tmp_path / "flake", KERNEL, INITRD)
    args = {"flake": flake + "#installer", "run_dir": str(tmp_path / "run"), "ipxe_dir": "/usr/lib/ipxe"}
    first = run_module(ansible_env, args)
    assert first["changed"] is True and not first["failed"], first
    toplevel = first["store_paths"]["toplevel"]
    assert open(first["kernel"], "rb").read() == KERNEL
    assert open(first["initrd"], "rb").read() == INITRD
    assert first["init"] == toplevel + "/init"
    assert first["cmdline"] == "init=%s/init console=ttyS0 panic=-1" % toplevel
    assert first["ipxe_dir"] == "/usr/lib/ipxe"
    assert first["log"] == str(tmp_path / "run" / "installer-build.log")

    second = run_module(ansible_env, args)
    assert second["changed"] is False and second["store_paths"] == first["store_paths"]
    assert run_module(ansible_env, args, "--check")["changed"] is False

    prepare.materialise(tmp_path / "flake", KERNEL, INITRD, "console=ttyS0 panic=-1 quiet")
    changed = run_module(ansible_env, args)
    assert changed["changed"] is True
    assert changed["cmdline"].endswith(" console=ttyS0 panic=-1 quiet")


def test_check_mode_builds_nothing(ansible_env, tmp_path):
    # Boot files nobody built before make derivations this store has never seen.
    nonce = uuid.uuid4().hex
    flake = prepare.materialise(tmp_path / "flake", KERNEL + nonce.encode(), INITRD + nonce.encode())
    result = run_module(ansible_env, {"flake": flake, "run_dir": str(tmp_path / "run")}, "--check", "--diff")
    assert result["changed"] is True and not result["failed"], result
    assert sorted(result["store_paths"]) == ["kernel", "netbootRamdisk", "toplevel"]
    for path in result["store_paths"].values():
        assert not os.path.exists(path)
    assert not (tmp_path / "run").exists()


def test_missing_attribute_is_named(ansible_env, tmp_path):
    flake = prepare.materialise(tmp_path / "flake", KERNEL, INITRD)
    result = run_module(ansible_env, {"flake": flake + "#not-netboot", "run_dir": str(tmp_path / "run")})
    assert result["failed"]
    assert "has no nixosConfigurations.not-netboot.config.system.build.netbootRamdisk" in result["msg"]
    assert result["missing"] == ["nixosConfigurations.not-netboot.config.system.build.netbootRamdisk"]


def test_build_failure_returns_log_tail_and_path(ansible_env, tmp_path):
    flake = prepare.materialise(tmp_path / "flake", KERNEL, INITRD)
    result = run_module(ansible_env, {"flake": flake + "#broken", "run_dir": str(tmp_path / "run")})
    log_path = str(tmp_path / "run" / "installer-build.log")
    assert result["failed"]
    assert "fixture toplevel: failing on purpose" in result["msg"] and log_path in result["msg"]
    assert result["log_path"] == log_path
    assert any("failing on purpose" in line for line in result["log_tail"])


def test_ipxe_dir_and_ipxe_installable_exclude_each_other(ansible_env, tmp_path):
    result = run_module(ansible_env, {"flake": "./x", "run_dir": str(tmp_path), "ipxe_dir": "/usr/lib/ipxe", "ipxe_installable": "./x#ipxe"})
    assert result["failed"] and "mutually exclusive" in result["msg"]


def test_no_nix_on_path(ansible_env, tmp_path):
    """The module's own PATH lacks nix (a task `environment:`), as on a controller without Nix."""
    flake = prepare.materialise(tmp_path / "flake", KERNEL, INITRD)
    playbook = tmp_path / "playbook.yml"
    result_file = tmp_path / "result.json"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [
            {"nixie.provision.installer": {"flake": flake, "run_dir": str(tmp_path / "run")},
             "environment": {"PATH": str(tmp_path)}, "register": "built", "ignore_errors": True},
            {"ansible.builtin.copy": {"content": "{{ built | to_json }}", "dest": str(result_file)}},
        ],
    }]))
    subprocess.run([shutil.which("ansible-playbook"), str(playbook)], env=ansible_env, capture_output=True, check=True, timeout=300)
    result = json.loads(result_file.read_text())
    assert result["failed"]
    assert result["msg"].startswith("nix: command not found")
    assert "apt install nix-bin" in result["msg"] and "nix develop" in result["msg"]
