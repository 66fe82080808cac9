{
  description = "Nixie: zero-touch bare-metal NixOS provisioning (netboot, phone-home agent, nixos-anywhere) driven from Ansible";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # Import into the NixOS configuration of the installer, next to netboot-minimal.nix
      # (see examples/installer.nix). Options: nixie.agent.{enable,package,extraPath}.
      nixosModules = {
        installer = ./nix/installer.nix;
        default = self.nixosModules.installer;
      };

      packages = forAllSystems (pkgs: {
        nixie-agent = pkgs.callPackage ./nix/agent.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.nixie-agent;
      });

      # `nix develop`: everything the collection and its tests run on the controller.
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            # requirements.txt, plus what the tests use
            (pkgs.python3.withPackages (
              python:
              with python;
              [
                ansible-core
                scapy
                tftpy
                aiohttp
                wakeonlan
                jmespath
                sushy
                pyghmi
                pytest
              ]
            ))
            pkgs.nixos-anywhere
            pkgs.nix
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
