"""The boot server's privilege check, read from /proc-format files: what it asks for, and of whom."""

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._bootd.preflight import missing_privileges, unprivileged_port_start

NET_BIND_SERVICE_AND_RAW = "%x" % (1 << 10 | 1 << 13)
NET_RAW = "%x" % (1 << 13)


def _status(tmp_path, capabilities):
    path = tmp_path / "status"
    path.write_text("Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t%016s\n" % capabilities)
    return str(path)


def test_both_capabilities_are_enough(tmp_path):
    assert missing_privileges(_status(tmp_path, NET_BIND_SERVICE_AND_RAW), port_start=1024, euid=1000) is None


def test_a_user_is_told_to_become_root(tmp_path):
    message = missing_privileges(_status(tmp_path, "0"), port_start=1024, euid=1000)
    assert message.startswith("the boot server needs root or CAP_NET_BIND_SERVICE") and "CAP_NET_RAW" in message
    assert "become: true" in message


def test_root_without_capabilities_is_not_told_to_become_root(tmp_path):
    message = missing_privileges(_status(tmp_path, "0"), port_start=1024, euid=0)
    assert "runs as root but without CAP_NET_BIND_SERVICE" in message and "container" in message
    assert "become" not in message


@pytest.mark.parametrize("port_start", [0, 67])
def test_a_lowered_unprivileged_port_start_needs_no_bind_capability(tmp_path, port_start):
    assert missing_privileges(_status(tmp_path, NET_RAW), port_start=port_start, euid=1000) is None
    message = missing_privileges(_status(tmp_path, "0"), port_start=port_start, euid=1000)
    assert "CAP_NET_RAW" in message and "CAP_NET_BIND_SERVICE" not in message


def test_the_sysctl_is_read_and_defaults_to_1024(tmp_path):
    (tmp_path / "start").write_text("80\n")
    assert unprivileged_port_start(str(tmp_path / "start")) == 80
    assert unprivileged_port_start(str(tmp_path / "absent")) == 1024
