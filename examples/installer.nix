# The installer the machines netboot: NixOS's minimal netboot image plus Nixie's agent and key-only sshd.
{ modulesPath, nixie, ... }:
{
  imports = [
    # Provides config.system.build.{kernel,netbootRamdisk}; nixie.nixosModules.installer does not import it.
    (modulesPath + "/installer/netboot/netboot-minimal.nix")
    nixie.nixosModules.installer
  ];
}
