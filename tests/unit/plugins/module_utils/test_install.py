"""nixos-anywhere's command line and the ssh it runs with: the host alias, the escaped zone, the pinned keys first."""

import os
import subprocess

from ansible_collections.nixie.provision.plugins.module_utils._install import nixos_anywhere_command, pin_host_keys, pinned_environment, pinning_ssh

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq3Ae8ciXvwSBoPHmIZVbHJU8KeUiJp6oNX8nn7UBsD root@installer"


def test_a_scoped_link_local_target_reaches_ssh_with_its_zone_escaped():
    command = nixos_anywhere_command("nixos-anywhere", "nixie-01", "fe80::5054:ff:fe5e:1%nixie0", "/k", "/x", False, [],
                                     store_paths=("/nix/store/a-disko", "/nix/store/b-system"))
    assert command[4:8] == ["--target-host", "root@nixie-01", "--ssh-option", "HostName=fe80::5054:ff:fe5e:1%%nixie0"]


def test_the_pinning_ssh_puts_the_pinned_options_before_all_others(tmp_path):
    directory = tmp_path / "run 1" / "nixie-01" / "installer-ssh"
    known_hosts = pin_host_keys(str(tmp_path / "installer_known_hosts"), "nixie-01", [KEY])
    ssh = os.path.join(pinning_ssh(str(directory), "nixie-01", known_hosts, ssh="/bin/echo"), "ssh")
    said = subprocess.run([ssh, "-o", "StrictHostKeyChecking=no", "root@nixie-01"], capture_output=True, text=True, check=True).stdout.split()
    assert said == ["-o", "UserKnownHostsFile=%s" % known_hosts, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                    "-o", "HostKeyAlias=nixie-01", "-o", "StrictHostKeyChecking=no", "root@nixie-01"]
    assert (tmp_path / "installer_known_hosts").read_text() == "nixie-01 %s\n" % KEY
    assert pinned_environment(str(directory), {"PATH": "/usr/bin", "HOME": "/root"}) == {"PATH": "%s:/usr/bin" % directory, "HOME": "/root"}
