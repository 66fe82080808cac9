# disko layout, applied by nixos-anywhere: a GPT on the first disk with a 1 GiB EFI system partition
# at /boot (for systemd-boot) and the rest as ext4 at /.
{ lib, ... }:
{
  disko.devices.disk.main = {
    type = "disk";
    # The first virtio disk (Nixie's lab machines). On other hardware, set it per machine in flake.nix, best by
    # its /dev/disk/by-id name (see nixie-03 there): Nixie resolves /dev/<name>, /dev/disk/by-id/<link> and
    # /dev/disk/by-path/<link> against the machine's agent report before anything is written.
    device = lib.mkDefault "/dev/vda";
    content = {
      type = "gpt";
      partitions = {
        ESP = {
          size = "1G";
          type = "EF00";
          content = {
            type = "filesystem";
            format = "vfat";
            mountpoint = "/boot";
            mountOptions = [ "umask=0077" ];
          };
        };
        root = {
          size = "100%";
          content = {
            type = "filesystem";
            format = "ext4";
            mountpoint = "/";
          };
        };
      };
    };
  };
}
