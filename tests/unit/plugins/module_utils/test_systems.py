"""module_utils/_systems.py against the real `nix` and the nixpkgs-free fixture flake: one evaluation for every host,
one build, and a host that does not evaluate or build failing alone."""

import os

# flake and offline_nix are fixtures, used by name.
from nix_fixture import Recorder, flake, nix_eval_raw, offline_nix  # noqa: F401  # pylint: disable=unused-import

from ansible_collections.nixie.provision.plugins.module_utils import _nix, _systems

HOSTS = {"nixie-01": "nixie-01", "db": "nixie-by-id"}


def test_one_evaluation_answers_for_every_host(flake):  # noqa: F811
    nix = _nix.Nix()
    recorder = Recorder(nix)
    systems = _systems.evaluate(nix, flake, HOSTS)
    assert [call[0] for call in recorder.calls] == ["eval"]
    for host, attribute in HOSTS.items():
        configuration = "%s#nixosConfigurations.%s.config" % (flake, attribute)
        assert systems[host]["toplevel"] == nix_eval_raw(configuration + ".system.build.toplevel.outPath")
        assert systems[host]["disko_script"] == nix_eval_raw(configuration + ".system.build.diskoScript.outPath")
        assert systems[host]["drvs"] == [nix_eval_raw(configuration + ".system.build.toplevel.drvPath"),
                                         nix_eval_raw(configuration + ".system.build.diskoScript.drvPath")]
        assert systems[host]["error"] is None and systems[host]["attribute"] == attribute
    assert systems["nixie-01"]["disk_devices"] == {"main": "/dev/vda"}
    assert systems["db"]["disk_devices"] == {"main": "/dev/disk/by-id/virtio-nixie-system"}
    assert systems["nixie-01"]["system"] == systems["db"]["system"] == "x86_64-linux"


def test_the_same_evaluation_tells_each_hosts_system(flake):  # noqa: F811
    nix = _nix.Nix()
    recorder = Recorder(nix)
    systems = _systems.evaluate(nix, flake, {"web": "nixie-01", "ampere": "nixie-arm64", "netboot": "installer"})
    assert [call[0] for call in recorder.calls] == ["eval"]
    assert {host: system["system"] for host, system in systems.items()} == {"web": "x86_64-linux", "ampere": "aarch64-linux",
                                                                            "netboot": None}


def test_a_host_that_does_not_evaluate_fails_alone_with_nix_error(flake):  # noqa: F811
    nix = _nix.Nix()
    recorder = Recorder(nix)
    systems = _systems.evaluate(nix, flake, {"nixie-01": "nixie-01", "bad": "nixie-throws", "gone": "nixie-09", "db": "nixie-by-id"})
    # The one evaluation of all, then one for each host to tell which failed.
    assert [call[0] for call in recorder.calls] == ["eval"] * 5
    assert systems["nixie-01"]["error"] is None and systems["db"]["error"] is None
    assert systems["nixie-01"]["toplevel"].endswith("-nixos-system-nixie-01")
    assert systems["bad"]["error"].startswith("bad: evaluating %s#nixosConfigurations.nixie-throws failed:\nerror:" % flake)
    assert "fixture: nixie-throws does not evaluate" in systems["bad"]["error"]
    assert systems["bad"]["toplevel"] is None and systems["bad"]["drvs"] == []
    assert systems["gone"]["error"] == "gone: flake %s has no nixosConfigurations.nixie-09" % flake


def test_a_configuration_without_disko_says_what_to_import(tmp_path):
    (tmp_path / "flake.nix").write_text("""{ outputs = { self }: { nixosConfigurations.plain.config.system.build.toplevel =
      builtins.derivation { name = "t"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }; }; }""")
    flake_ref = "path:%s" % tmp_path
    system = _systems.evaluate(_nix.Nix(), flake_ref, {"plain": "plain"})["plain"]
    assert system["error"] == ("plain: flake %s has no nixosConfigurations.plain.config.system.build.diskoScript "
                               "(does the configuration import disko's NixOS module, disko.nixosModules.disko?)" % flake_ref)


def test_one_build_realises_every_host_and_a_failing_one_fails_alone(flake, tmp_path):  # noqa: F811
    nix = _nix.Nix()
    systems = _systems.evaluate(nix, flake, {"nixie-01": "nixie-01", "db": "nixie-by-id", "broken": "nixie-unbuildable"})
    recorder = Recorder(nix)
    log = tmp_path / "run" / "systems-build.log"
    results = _systems.build(nix, systems, ["nixie-01", "db", "broken"], str(log))
    assert [call[0] for call in recorder.calls] == ["build"]
    installables = [arg for arg in recorder.calls[0] if arg.startswith("/nix/store/")]
    assert sorted(installables) == sorted(nix.derivation_installable(drv) for host in systems for drv in systems[host]["drvs"])
    assert results["nixie-01"] is None and results["db"] is None
    for host in ("nixie-01", "db"):
        assert os.path.isfile(os.path.join(systems[host]["toplevel"], "nixos-version"))
        with open(systems[host]["disko_script"]) as handle:
            assert handle.read() == "#!/bin/sh\nset -e\ncat > %s\nsync\n" % systems[host]["disk_devices"]["main"]
    # --keep-going: the failing diskoScript did not stop its own host's toplevel either.
    assert os.path.exists(systems["broken"]["toplevel"])
    assert results["broken"].startswith("broken: building %s failed; nix's errors:\nerror:" % systems["broken"]["disko_script"])
    assert "disko-nixie-unbuildable.drv" in results["broken"] and results["broken"].endswith("full log: %s" % log)
    text = log.read_text()
    assert "fixture diskoScript: failing on purpose" in text
    assert text.startswith("nixie: ") and "nix build of 6 derivations for nixie-01, db, broken" in text.splitlines()[0]


def test_derivation_installable_follows_the_nix_version(tmp_path):
    for version, expected in (("nix (Nix) 2.8.0", "/nix/store/a.drv"), ("nix (Nix) 2.13.3", "/nix/store/a.drv^*"),
                              ("nix (Lix, like Nix) 2.91.1", "/nix/store/a.drv^*")):
        fake = tmp_path / "nix"
        fake.write_text("#!/bin/sh\necho '%s'\n" % version)
        fake.chmod(0o755)
        assert _nix.Nix(str(fake)).derivation_installable("/nix/store/a.drv") == expected
