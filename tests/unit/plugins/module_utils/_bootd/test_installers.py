"""Which installer each host of a run boots when the run holds x86 and arm64 hosts, and the refusal of a host
whose system has no installer."""

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._bootd.installers import (
    Installer, InstallerError, check_host_systems, installer_for, installers_from_config,
)
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host

X86 = {"kernel": "/x/bzImage", "initrd": "/x/initrd", "cmdline": "init=/nix/store/x86/init"}
ARM = {"system": "aarch64-linux", "kernel": "/a/Image", "initrd": "/a/initrd", "cmdline": "init=/nix/store/arm/init"}
HOSTS = [Host("web-01", "52:54:00:00:00:01"), Host("web-02", "52:54:00:00:00:02", system="x86_64-linux"),
         Host("ampere-01", "52:54:00:00:00:03", system="aarch64-linux")]


def test_a_mixed_run_boots_each_host_with_its_own_systems_installer():
    installers = installers_from_config(dict(X86, installers=[ARM]))
    check_host_systems(HOSTS, installers)
    booted = {host.name: installer_for(host, installers, "x86_64-linux") for host in HOSTS}
    assert booted == {"web-01": Installer("/x/bzImage", "/x/initrd", "init=/nix/store/x86/init", "x86_64-linux"),
                      "web-02": Installer("/x/bzImage", "/x/initrd", "init=/nix/store/x86/init", "x86_64-linux"),
                      "ampere-01": Installer("/a/Image", "/a/initrd", "init=/nix/store/arm/init", "aarch64-linux")}


def test_the_default_installer_may_be_another_systems():
    installers = installers_from_config(dict(ARM))
    assert installer_for(Host("ampere-01", "52:54:00:00:00:03"), installers, "aarch64-linux").kernel == "/a/Image"


def test_an_arm64_host_with_only_an_x86_installer_is_refused_naming_host_and_system():
    with pytest.raises(InstallerError) as refused:
        check_host_systems(HOSTS, installers_from_config(dict(X86)))
    message = str(refused.value)
    assert "ampere-01 (aarch64-linux)" in message and "web-0" not in message
    assert "built for x86_64-linux only" in message


def test_two_installers_for_one_system_are_refused():
    with pytest.raises(InstallerError, match="two installers for aarch64-linux"):
        installers_from_config(dict(ARM, installers=[ARM]))
