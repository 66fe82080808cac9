# The Nixie agent (agent/nixie-agent, a POSIX sh script) as a package: the script itself, run by the
# package set's shell, with the tools it calls on its PATH. nixosModules.installer and
# packages.<system>.nixie-agent both come from here, so there is one definition and one source file.
{
  lib,
  runCommand,
  makeWrapper,
  runtimeShell,
  curl,
  iproute2,
  coreutils,
  util-linux,
  gnugrep,
  gnused,
  gawk,
}:
let
  # curl talks to the boot server's API, ip finds the address that reaches it, blkid (util-linux)
  # inspects disks, and grep, sed and awk take the answers apart.
  runtimeInputs = [
    curl
    iproute2
    coreutils
    util-linux
    gnugrep
    gnused
    gawk
  ];
in
runCommand "nixie-agent"
  {
    nativeBuildInputs = [ makeWrapper ];
    passthru = { inherit runtimeInputs; };
    meta = {
      description = "Reports a netbooted NixOS installer to the Nixie boot server and installs the SSH key it answers with";
      homepage = "https://github.com/nixie-provision/nixie";
      license = lib.licenses.gpl3Plus;
      platforms = lib.platforms.linux;
      mainProgram = "nixie-agent";
    };
  }
  ''
    install -D -m 0755 ${../agent/nixie-agent} "$out/bin/nixie-agent"
    # The script starts with #!/bin/sh; point it at a shell in the store so the package runs anywhere.
    sed -i "1s|^#!.*|#!${runtimeShell}|" "$out/bin/nixie-agent"
    wrapProgram "$out/bin/nixie-agent" --prefix PATH : ${lib.makeBinPath runtimeInputs}
  ''
