# An example fleet for Nixie: two machines and the netboot installer that provisions them.
# Copy this directory into a repository of your own, then adjust hosts.json, configuration.nix and
# disk-config.nix. Host names here are the keys of hosts.json.
{
  description = "Machines provisioned with Nixie";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
    disko = {
      url = "github:nix-community/disko";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    nixie = {
      url = "github:nixie-provision/nixie";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      disko,
      nixie,
    }:
    let
      system = "x86_64-linux";
      machine =
        name: extraModules:
        nixpkgs.lib.nixosSystem {
          inherit system;
          modules = [
            disko.nixosModules.disko
            ./disk-config.nix
            ./configuration.nix
            { networking.hostName = name; }
          ]
          ++ extraModules;
        };
    in
    {
      nixosConfigurations = {
        # Built by nixie.provision.installer (flake: ./examples#installer) and netbooted by the boot server.
        installer = nixpkgs.lib.nixosSystem {
          inherit system;
          specialArgs = { inherit nixie; };
          modules = [ ./installer.nix ];
        };
        # Installed by nixos-anywhere, disks partitioned by disko.
        nixie-01 = machine "nixie-01" [ ];
        nixie-02 = machine "nixie-02" [ ];
        # Its system disk named by /dev/disk/by-id (see its agent report's by_id, or `ls -l /dev/disk/by-id` in the
        # installer): stable across boots and kernels, unlike /dev/sda or /dev/nvme0n1, which can swap when a disk is
        # added. Nixie refuses the install if the machine has no such disk; its other disks are not in the layout, so
        # disko leaves them alone and Nixie installs whatever they hold.
        nixie-03 = machine "nixie-03" [
          { disko.devices.disk.main.device = "/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T123456A"; }
        ];
      };

      # iPXE from the same nixpkgs, for the installer module's `ipxe_installable: ./examples#ipxe`.
      packages.${system}.ipxe = nixpkgs.legacyPackages.${system}.ipxe;
    };
}
