"""module_utils/_nix.py against the real `nix` (Debian's nix-bin) and the nixpkgs-free fixture flake."""

import json
import os
import subprocess
import uuid

import pytest
# flake and offline_nix are fixtures, used by name.
from nix_fixture import INITRD, KERNEL, Recorder, flake, nix_eval_raw, offline_nix, prepare  # noqa: F401  # pylint: disable=unused-import

from ansible_collections.nixie.provision.plugins.module_utils import _nix


@pytest.mark.parametrize("value", ['plain', 'quote " inside', "back\\slash", "${builtins.abort \"no\"}", "dollar $ alone",
                                   "two\nlines\tand tab\r", "ünïcødé", "''${x}"])
def test_nix_string_round_trips_through_nix(value):
    evaluated = subprocess.run(
        ["nix", "--extra-experimental-features", "nix-command", "eval", "--json", "--expr", _nix.nix_string(value)],
        capture_output=True, text=True, check=True,
    ).stdout
    assert json.loads(evaluated) == value


def test_attribute_path_quotes_only_what_needs_it():
    assert _nix.attribute_path(["nixosConfigurations", "nixie-01", "config"]) == "nixosConfigurations.nixie-01.config"
    assert _nix.attribute_path(["nixosConfigurations", "web.example.org"]) == 'nixosConfigurations."web.example.org"'


@pytest.mark.parametrize("flake, expected", [
    ("./examples#installer", ("./examples", "installer")),
    ("./examples", ("./examples", "installer")),
    ("github:me/fleet#netboot-x86", ("github:me/fleet", "netboot-x86")),
    ("path:/srv/fleet?dir=sub#web.example", ("path:/srv/fleet?dir=sub", "web.example")),
])
def test_split_flake(flake, expected):
    assert _nix.split_flake(flake) == expected


@pytest.mark.parametrize("flake", ["#installer", "./examples#has space", "./examples#a\"b"])
def test_split_flake_rejects(flake):
    with pytest.raises(_nix.NixError, match="flake"):
        _nix.split_flake(flake)


def test_missing_nix_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_nix, "NIX_PROFILE_BINS", ())
    with pytest.raises(_nix.NixNotFound) as caught:
        _nix.Nix()
    message = str(caught.value)
    assert "nix: command not found" in message
    assert "apt install nix-bin" in message and "https://nixos.org/download" in message and "nix develop" in message


def test_nix_given_as_missing_path(tmp_path):
    with pytest.raises(_nix.NixNotFound, match="%s not found" % (tmp_path / "nix")):
        _nix.Nix(str(tmp_path / "nix"))


def test_timeout_stops_nix_and_its_children(tmp_path):
    fake_nix = tmp_path / "nix"
    pid_file = tmp_path / "child.pid"
    fake_nix.write_text("#!/bin/sh\nsleep 60 &\necho $! > %s\nwait\n" % pid_file)
    fake_nix.chmod(0o755)
    nix = _nix.Nix(str(fake_nix), timeout=1)
    with pytest.raises(_nix.NixError, match="did not finish within the timeout"):
        nix.run("build")
    child = int(pid_file.read_text())
    # The builder-like child is gone too (a zombie at most, until init reaps it).
    try:
        with open("/proc/%d/stat" % child) as stat:
            assert stat.read().split(")")[1].split()[0] == "Z"
    except FileNotFoundError:
        pass


def test_toplevel_paths_of_all_hosts_in_one_evaluation(flake):
    nix = _nix.Nix()
    recorder = Recorder(nix)
    paths = _nix.toplevel_paths(nix, flake, ["nixie-01", "nixie-02"])
    assert paths == {
        host: nix_eval_raw("%s#nixosConfigurations.%s.config.system.build.toplevel.outPath" % (flake, host))
        for host in ("nixie-01", "nixie-02")
    }
    assert paths["nixie-01"].endswith("-nixos-system-nixie-01")
    assert len(recorder.calls) == 1
    assert recorder.calls[0][:3] == ("eval", "--json", flake + "#nixosConfigurations")


def test_toplevel_paths_names_every_missing_host(flake):
    with pytest.raises(_nix.AttributeMissing) as caught:
        _nix.toplevel_paths(_nix.Nix(), flake, ["nixie-01", "nixie-09", "web.example.org"])
    message = str(caught.value)
    assert "has no nixosConfigurations.nixie-09" in message
    assert 'has no nixosConfigurations."web.example.org"' in message
    assert "nixie-01" not in message
    assert caught.value.details["missing"] == ["nixosConfigurations.nixie-09", 'nixosConfigurations."web.example.org"']


def test_toplevel_paths_of_a_flake_without_nixos_configurations(tmp_path):
    (tmp_path / "flake.nix").write_text("{ outputs = { self }: { }; }\n")
    with pytest.raises(_nix.AttributeMissing, match="flake path:%s has no nixosConfigurations" % tmp_path):
        _nix.toplevel_paths(_nix.Nix(), "path:%s" % tmp_path, ["nixie-01"])


def test_flake_not_found(tmp_path):
    with pytest.raises(_nix.FlakeNotFound, match="flake %s not found: there is no %s" % (tmp_path, tmp_path / "flake.nix")):
        _nix.toplevel_paths(_nix.Nix(), str(tmp_path), ["nixie-01"])


def test_builds_the_installer_in_one_nix_build(flake, tmp_path):
    nix = _nix.Nix()
    recorder = Recorder(nix)
    result = _nix.InstallerBuild(nix, flake + "#installer", str(tmp_path / "run")).run()

    toplevel = result["store_paths"]["toplevel"]
    assert result["changed"] is True
    assert open(result["kernel"], "rb").read() == KERNEL
    assert result["kernel"] == os.path.join(result["store_paths"]["kernel"], "bzImage")
    assert open(result["initrd"], "rb").read() == INITRD
    assert result["initrd"] == os.path.join(result["store_paths"]["netbootRamdisk"], "initrd")
    assert result["init"] == toplevel + "/init" and os.access(result["init"], os.X_OK)
    assert result["cmdline"] == "init=%s/init console=ttyS0 panic=-1" % toplevel
    assert result["ipxe_dir"] is None
    builds = [call for call in recorder.calls if call[0] == "build"]
    assert len(builds) == 1
    assert builds[0][-3:] == tuple("%s#nixosConfigurations.installer.config.system.build.%s" % (flake, artifact)
                                   for artifact in ("kernel", "netbootRamdisk", "toplevel"))
    with open(tmp_path / "run" / "installer.json") as state:
        assert json.load(state)["store_paths"] == result["store_paths"]
    log = (tmp_path / "run" / "installer-build.log").read_text()
    assert log.startswith("nixie: ") and "nix build finished after" in log


def test_changed_only_when_the_store_paths_change(flake, tmp_path):
    run_dir = str(tmp_path / "run")
    first = _nix.InstallerBuild(_nix.Nix(), flake + "#installer", run_dir).run()
    again = _nix.InstallerBuild(_nix.Nix(), flake + "#installer", run_dir).run()
    assert (first["changed"], again["changed"]) == (True, False)
    assert again["store_paths"] == first["store_paths"]

    prepare.materialise(tmp_path / "flake", KERNEL, INITRD + b"changed\n")
    changed = _nix.InstallerBuild(_nix.Nix(), flake + "#installer", run_dir).run()
    assert changed["changed"] is True
    assert changed["store_paths"]["netbootRamdisk"] != first["store_paths"]["netbootRamdisk"]
    assert changed["store_paths"]["kernel"] == first["store_paths"]["kernel"]
    assert changed["diff"]["before"]["store_paths"] == first["store_paths"]


def test_check_mode_evaluates_and_builds_nothing(tmp_path):
    # Kernel parameters nobody used before make derivations this store has never seen.
    flake = prepare.materialise(tmp_path / "flake", KERNEL, INITRD, "console=ttyS0 nixie.test=%s" % uuid.uuid4())
    run_dir = tmp_path / "run"
    nix = _nix.Nix()
    recorder = Recorder(nix)
    checked = _nix.InstallerBuild(nix, flake + "#installer", str(run_dir), check_mode=True).run()
    assert checked["changed"] is True
    assert not os.path.exists(checked["store_paths"]["toplevel"])
    assert "kernel" not in checked
    assert [call[0] for call in recorder.calls] == ["eval"]
    assert not run_dir.exists()

    built = _nix.InstallerBuild(_nix.Nix(), flake + "#installer", str(run_dir)).run()
    assert built["store_paths"] == checked["store_paths"]
    rechecked = _nix.InstallerBuild(_nix.Nix(), flake + "#installer", str(run_dir), check_mode=True).run()
    assert rechecked["changed"] is False
    assert rechecked["kernel"] == built["kernel"] and rechecked["cmdline"] == built["cmdline"]


def test_missing_configuration_is_named_before_building(flake, tmp_path):
    nix = _nix.Nix()
    recorder = Recorder(nix)
    with pytest.raises(_nix.AttributeMissing) as caught:
        _nix.InstallerBuild(nix, flake + "#netboot", str(tmp_path / "run")).run()
    assert str(caught.value) == "flake %s has no nixosConfigurations.netboot" % flake
    assert [call[0] for call in recorder.calls] == ["eval"]


def test_configuration_without_netboot_profile(flake, tmp_path):
    with pytest.raises(_nix.AttributeMissing) as caught:
        _nix.InstallerBuild(_nix.Nix(), flake + "#not-netboot", str(tmp_path / "run")).run()
    message = str(caught.value)
    assert "has no nixosConfigurations.not-netboot.config.system.build.netbootRamdisk" in message
    assert "netboot-minimal.nix" in message


def test_build_failure_reports_the_log_tail_and_path(flake, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(_nix.BuildFailed) as caught:
        _nix.InstallerBuild(_nix.Nix(), flake + "#broken", str(run_dir)).run()
    log_path = str(run_dir / "installer-build.log")
    message = str(caught.value)
    assert "building the installer from %s#nixosConfigurations.broken failed" % flake in message
    assert "fixture toplevel: failing on purpose" in message
    assert message.endswith("full log: %s" % log_path)
    assert caught.value.details["log_path"] == log_path
    assert len(caught.value.details["log_tail"]) == _nix.LOG_TAIL_LINES
    # The tail is short; the file has the builder's whole output.
    assert "fixture build output line 1\n" not in message
    assert "fixture build output line 1\n" in open(log_path).read()
    assert not (run_dir / "installer.json").exists()


def test_ipxe_from_the_same_flake(flake, tmp_path):
    result = _nix.InstallerBuild(_nix.Nix(), flake + "#installer", str(tmp_path / "run"), ipxe_installable=flake + "#ipxe").run()
    assert result["ipxe_dir"] == result["store_paths"]["ipxe"]
    assert os.path.isfile(os.path.join(result["ipxe_dir"], "undionly.kpxe"))


def test_ipxe_dir_without_ipxe_binaries(flake, tmp_path):
    with pytest.raises(_nix.NixError, match="ipxe_dir: %s has none of the iPXE binaries" % tmp_path):
        _nix.InstallerBuild(_nix.Nix(), flake + "#installer", str(tmp_path / "run"), ipxe_dir=str(tmp_path)).run()


def test_other_installers_are_those_the_runs_hosts_need_besides_its_own():
    flakes = {"aarch64-linux": "./fleet#installer-aarch64", "riscv64-linux": "./fleet#installer-riscv64"}
    hosts = ["x86_64-linux", None, "aarch64-linux", "aarch64-linux"]
    assert _nix.other_installers(flakes, hosts, "x86_64-linux") == {"aarch64-linux": "./fleet#installer-aarch64"}
    assert _nix.other_installers(flakes, [None, "x86_64-linux"], "x86_64-linux") == {}


def test_a_system_the_hosts_need_without_an_installer_flake_is_named():
    with pytest.raises(_nix.NixError, match=r"need an installer for aarch64-linux; give its flake, such as "
                                            r"installers: \{aarch64-linux: \./fleet#installer-aarch64\}"):
        _nix.other_installers({}, ["x86_64-linux", "aarch64-linux"], "x86_64-linux")
