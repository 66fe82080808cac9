# nixosModules.installer: turns a NixOS netboot image into a Nixie installer.
#
# - Runs the Nixie agent at boot. It reads `nixie.api=` and `nixie.token=` from the kernel command line
#   (the boot server puts them there), reports this machine to the boot server and installs the SSH public
#   key it answers with as root's authorized key, so nixos-anywhere can log in.
# - Runs sshd with public-key authentication only. The module sets no password; the installer profile's
#   empty console passwords cannot be used over SSH, because password and keyboard-interactive
#   authentication are off (and sshd refuses empty passwords anyway).
#
# It does not make the system netbootable: the installer configuration imports
# (modulesPath + "/installer/netboot/netboot-minimal.nix") itself, as examples/installer.nix does, which
# also provides config.system.build.{kernel,netbootRamdisk} and marks the system VARIANT_ID=installer
# (nixos-anywhere then skips its kexec step).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.nixie.agent;
in
{
  options.nixie.agent = {
    enable = lib.mkEnableOption "the Nixie agent, which reports this installer to the Nixie boot server" // {
      default = true;
    };

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./agent.nix { };
      defaultText = lib.literalMD "the agent from the Nixie flake, built with this system's nixpkgs";
      description = "The Nixie agent package; its `bin/nixie-agent` is run, with its `runtimeInputs` on PATH.";
    };

    extraPath = lib.mkOption {
      type = lib.types.listOf (lib.types.either lib.types.package lib.types.str);
      default = [ ];
      example = lib.literalExpression "[ pkgs.dmidecode pkgs.pciutils ]";
      description = "More packages (or directories) on the agent service's PATH, for example for hardware reports.";
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.nixie-agent = {
      description = "Nixie agent: report this installer to the Nixie boot server";
      wantedBy = [ "multi-user.target" ];
      # Phoning home tells the boot server that nixos-anywhere can log in now, so sshd must be up
      # (and its host keys, which the agent reports, generated) first.
      wants = [
        "network-online.target"
        "sshd.service"
      ];
      after = [
        "network-online.target"
        "sshd.service"
      ];
      # The package's wrapper sets PATH too; this also covers a replacement package that has none.
      path = (cfg.package.runtimeInputs or [ ]) ++ cfg.extraPath;
      # The boot server may come up after the machine (or restart): keep retrying instead of giving up
      # after systemd's default start limit.
      unitConfig.StartLimitIntervalSec = 0;
      serviceConfig = {
        Type = "simple";
        ExecStart = lib.getExe cfg.package;
        Restart = "on-failure";
        RestartSec = 5;
        # Exit status 2: no nixie.api= on the kernel command line (not booted by Nixie); retrying cannot help.
        RestartPreventExitStatus = 2;
      };
    };

    services.openssh = {
      enable = true;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        # Overrides the installer profile's `mkDefault "yes"`: root may log in, with a key only.
        PermitRootLogin = "prohibit-password";
      };
    };
  };
}
