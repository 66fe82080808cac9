# What every machine runs once installed. nixos-anywhere installs it; the boot loader is systemd-boot,
# so the machines must boot with UEFI.
{ modulesPath, ... }:
{
  imports = [
    # Firmware and kernel modules for hardware not described elsewhere.
    (modulesPath + "/installer/scan/not-detected.nix")
  ];

  # Disk controllers common on servers, desktops and virtual machines, needed to mount / at boot.
  boot.initrd.availableKernelModules = [
    "ahci"
    "nvme"
    "sd_mod"
    "usb_storage"
    "xhci_pci"
    "virtio_pci"
    "virtio_blk"
    "virtio_scsi"
  ];

  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  services.openssh = {
    enable = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "prohibit-password";
    };
  };

  users.users.root.openssh.authorizedKeys.keys = [
    # Placeholder: replace with your own public key, or you cannot log in after the install.
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlaceholderReplaceWithYourOwnPublicKey0000 you@example.org"
  ];

  system.stateVersion = "25.05";
}
