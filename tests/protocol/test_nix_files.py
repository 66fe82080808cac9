"""The repository's Nix files, checked with the real `nix` and no nixpkgs.

Nothing here can build against nixpkgs (there is no network), so the flakes and NixOS modules are
evaluated against small stand-ins for nixpkgs' `lib` and `pkgs`: that checks their shape (attribute
names, values, the wiring between files) and that they parse, not that nixpkgs accepts them.
"""

import importlib.util
import json
import os
import re
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "flake-installer", "prepare.py")
_spec = importlib.util.spec_from_file_location("flake_installer_prepare", FIXTURE)
prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare)

NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]

# A stand-in for the parts of nixpkgs' lib and package set the repository's Nix files use.
STUBS = r"""
let
  lib = {
    mkEnableOption = name: { description = "Whether to enable ${name}."; default = false; };
    mkOption = attrs: attrs;
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkDefault = value: value;
    getExe = package: "${package.outPath}/bin/${package.meta.mainProgram}";
    literalMD = text: text;
    literalExpression = text: text;
    makeBinPath = packages: builtins.concatStringsSep ":" (map (p: "${p}/bin") packages);
    licenses.gpl3Plus = "GPL-3.0-or-later";
    platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
    genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
    types = {
      package = "package";
      str = "str";
      listOf = type: "list of ${type}";
      either = a: b: "${a} or ${b}";
    };
  };
  pkgsFor = system: {
    stdenv.hostPlatform.system = system;
    callPackage = path: overrides: { calledPackage = toString path; inherit overrides; };
    mkShell = attrs: attrs;
    python3.withPackages = select: { python = select (lib.genAttrs
      [ "ansible-core" "scapy" "tftpy" "aiohttp" "wakeonlan" "jmespath" "sushy" "pyghmi" "pytest" ] (name: name)); };
    nixos-anywhere = "nixos-anywhere";
    nix = "nix";
    nixfmt-rfc-style = "nixfmt";
    ipxe = "ipxe-${system}";
    curl = "curl";
    iproute2 = "iproute2";
    coreutils = "coreutils";
    util-linux = "util-linux";
    gnugrep = "gnugrep";
    gnused = "gnused";
    gawk = "gawk";
  };
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] pkgsFor;
  };
  agentPackage = {
    outPath = "/nix/store/00000000000000000000000000000000-nixie-agent";
    meta.mainProgram = "nixie-agent";
    runtimeInputs = [ "curl" "iproute2" "coreutils" "util-linux" "gnugrep" "gnused" "gawk" ];
  };
in
"""


@pytest.fixture(autouse=True)
def offline_nix(tmp_path_factory, monkeypatch):
    for name, value in prepare.offline_nix_env(tmp_path_factory.mktemp("nix-conf")).items():
        monkeypatch.setenv(name, value)


def evaluate(expression):
    """`nix-instantiate --eval --strict --json` of the stubs followed by ``expression``, run from the repository root."""
    done = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "--expr", STUBS + expression],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def repository_nix_files():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.nix"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return sorted(path for path in listed.split("\0") if path and os.path.exists(os.path.join(ROOT, path)))


def test_the_files_this_suite_checks_are_found():
    files = repository_nix_files()
    for expected in ("flake.nix", "nix/installer.nix", "nix/agent.nix", "examples/flake.nix", "tests/fixtures/flake-installer/flake.nix"):
        assert expected in files


@pytest.mark.parametrize("path", repository_nix_files())
def test_nix_file_parses(path):
    done = subprocess.run(["nix-instantiate", "--parse", path], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_installer_module_runs_the_agent_and_key_only_sshd():
    module = evaluate("""
      import ./nix/installer.nix {
        inherit lib;
        pkgs = pkgsFor "x86_64-linux";
        config.nixie.agent = { enable = true; package = agentPackage; extraPath = [ "dmidecode" ]; };
      }
    """)
    options = module["options"]["nixie"]["agent"]
    assert options["enable"]["default"] is True
    assert options["package"]["default"]["calledPackage"] == os.path.join(ROOT, "nix", "agent.nix")
    assert options["extraPath"]["default"] == []

    config = module["config"]
    assert config["_type"] == "if" and config["condition"] is True
    service = config["content"]["systemd"]["services"]["nixie-agent"]
    assert service["wantedBy"] == ["multi-user.target"]
    assert service["wants"] == service["after"] == ["network-online.target", "sshd.service"]
    assert service["path"] == ["curl", "iproute2", "coreutils", "util-linux", "gnugrep", "gnused", "gawk", "dmidecode"]
    assert service["serviceConfig"]["ExecStart"] == "/nix/store/00000000000000000000000000000000-nixie-agent/bin/nixie-agent"
    assert service["serviceConfig"]["Restart"] == "on-failure"
    assert service["serviceConfig"]["RestartPreventExitStatus"] == 2
    assert service["unitConfig"]["StartLimitIntervalSec"] == 0

    ssh = config["content"]["services"]["openssh"]
    assert ssh["enable"] is True
    assert ssh["settings"] == {"PasswordAuthentication": False, "KbdInteractiveAuthentication": False, "PermitRootLogin": "prohibit-password"}
    # No password of any kind is set, and the module does not import a netboot profile.
    assert "users" not in config["content"] and "imports" not in module


def test_agent_package_installs_the_one_agent_script():
    if not os.path.exists(os.path.join(ROOT, "agent", "nixie-agent")):
        pytest.skip("agent/nixie-agent is not in this checkout yet")
    package = evaluate("""
      let
        package = import ./nix/agent.nix;
        # What callPackage does: pass the arguments the function names.
        arguments = builtins.intersectAttrs (builtins.functionArgs package) (pkgsFor "x86_64-linux" // {
          inherit lib;
          makeWrapper = "makeWrapper";
          runtimeShell = "/nix/store/00000000000000000000000000000000-bash/bin/bash";
          runCommand = name: env: script: { inherit name env script; };
        });
      in
      package arguments
    """)
    assert package["name"] == "nixie-agent"
    assert package["env"]["meta"]["mainProgram"] == "nixie-agent"
    assert re.search(r"install -D -m 0755 /nix/store/[a-z0-9]{32}-nixie-agent \"\$out/bin/nixie-agent\"", package["script"])
    assert "--prefix PATH : curl/bin:iproute2/bin:coreutils/bin:util-linux/bin:gnugrep/bin:gnused/bin:gawk/bin" in package["script"]
    assert package["env"]["passthru"]["runtimeInputs"] == ["curl", "iproute2", "coreutils", "util-linux", "gnugrep", "gnused", "gawk"]


def test_repository_flake_outputs():
    outputs = evaluate("""
      let flake = import ./flake.nix; self = flake.outputs { inherit self nixpkgs; }; in
      {
        nixpkgsUrl = flake.inputs.nixpkgs.url;
        installerModule = toString self.nixosModules.installer;
        defaultModule = toString self.nixosModules.default;
        inherit (self) packages devShells formatter;
      }
    """)
    assert outputs["nixpkgsUrl"].startswith("github:NixOS/nixpkgs/")
    assert outputs["installerModule"] == outputs["defaultModule"] == os.path.join(ROOT, "nix", "installer.nix")
    for system in ("x86_64-linux", "aarch64-linux"):
        assert outputs["packages"][system]["nixie-agent"]["calledPackage"] == os.path.join(ROOT, "nix", "agent.nix")
        assert outputs["packages"][system]["default"] == outputs["packages"][system]["nixie-agent"]
        python, *tools = outputs["devShells"][system]["default"]["packages"]
        assert tools == ["nixos-anywhere", "nix"]
        assert set(requirement_names()) <= set(python["python"])
        assert outputs["formatter"][system] == "nixfmt"


def requirement_names():
    with open(os.path.join(ROOT, "requirements.txt")) as handle:
        return [re.split(r"[<>=!~ ]", line.strip(), maxsplit=1)[0] for line in handle if line.strip() and not line.startswith("#")]


def test_example_flake_defines_the_installer_and_every_example_host():
    outputs = evaluate("""
      let
        flake = import ./examples/flake.nix;
        nixpkgsWithSystem = nixpkgs // { lib = lib // { nixosSystem = args: args; }; };
        nixie = { nixosModules.installer = "nixie-installer-module"; };
        disko = { nixosModules.disko = "disko-module"; };
        self = flake.outputs { inherit self nixie disko; nixpkgs = nixpkgsWithSystem; };
      in
      {
        inputs = builtins.mapAttrs (name: input: input.url) flake.inputs;
        follows = builtins.mapAttrs (name: input: input.inputs.nixpkgs.follows or null) flake.inputs;
        configurations = builtins.mapAttrs (name: system: {
          inherit (system) system;
          modules = map (module: if builtins.isPath module then baseNameOf module else module) system.modules;
          specialArgs = builtins.attrNames (system.specialArgs or { });
        }) self.nixosConfigurations;
        inherit (self) packages;
      }
    """)
    assert outputs["inputs"]["nixie"] == "github:nixie-provision/nixie"
    assert outputs["follows"] == {"nixpkgs": None, "disko": "nixpkgs", "nixie": "nixpkgs"}
    configurations = outputs["configurations"]
    with open(os.path.join(ROOT, "examples", "hosts.json")) as handle:
        hosts = sorted(json.load(handle))
    assert sorted(configurations) == sorted(hosts + ["installer"])
    assert configurations["installer"] == {"system": "x86_64-linux", "modules": ["installer.nix"], "specialArgs": ["nixie"]}
    for host in hosts:
        assert configurations[host]["modules"][:3] == ["disko-module", "disk-config.nix", "configuration.nix"]
        assert configurations[host]["modules"][3] == {"networking": {"hostName": host}}
    assert outputs["packages"]["x86_64-linux"]["ipxe"] == "ipxe-x86_64-linux"


def test_example_installer_imports_netboot_minimal_and_the_nixie_module():
    installer = evaluate("""
      import ./examples/installer.nix { modulesPath = "/nixpkgs/nixos/modules"; nixie.nixosModules.installer = "nixie-installer-module"; }
    """)
    assert installer["imports"] == ["/nixpkgs/nixos/modules/installer/netboot/netboot-minimal.nix", "nixie-installer-module"]


def test_example_machine_boots_with_systemd_boot_and_key_only_ssh():
    machine = evaluate("""import ./examples/configuration.nix { modulesPath = "/nixpkgs/nixos/modules"; }""")
    assert machine["boot"]["loader"]["systemd-boot"]["enable"] is True
    assert machine["services"]["openssh"]["settings"]["PasswordAuthentication"] is False
    assert len(machine["users"]["users"]["root"]["openssh"]["authorizedKeys"]["keys"]) == 1


def test_example_disk_layout():
    disk = evaluate("""(import ./examples/disk-config.nix { inherit lib; }).disko.devices.disk.main""")
    partitions = disk["content"]["partitions"]
    assert disk["content"]["type"] == "gpt"
    assert partitions["ESP"]["size"] == "1G" and partitions["ESP"]["type"] == "EF00"
    assert partitions["ESP"]["content"] == {"type": "filesystem", "format": "vfat", "mountpoint": "/boot", "mountOptions": ["umask=0077"]}
    assert partitions["root"]["size"] == "100%"
    assert partitions["root"]["content"] == {"type": "filesystem", "format": "ext4", "mountpoint": "/"}


def test_fixture_flake_show_and_check(tmp_path):
    flake = prepare.materialise(tmp_path / "flake", b"kernel", b"initrd")
    shown = subprocess.run(NIX + ["flake", "show", "--json", flake], capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    outputs = json.loads(shown.stdout)
    assert sorted(outputs["nixosConfigurations"]) == (["broken"] + ["fleet-%02d" % n for n in range(1, 21)] + [
        "installer", "nixie-01", "nixie-02", "nixie-03", "nixie-arm64", "nixie-by-id", "nixie-http-arm64", "nixie-nvme", "nixie-throws",
        "nixie-unbuildable", "not-netboot"])
    assert outputs["packages"]["x86_64-linux"]["ipxe"]["type"] == "derivation"
    checked = subprocess.run(NIX + ["flake", "check", flake], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
