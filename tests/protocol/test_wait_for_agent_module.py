"""nixie.provision.wait_for_agent as the module process alone, as it runs on a controller that is not this machine (its
action plugin hands the host's variables over as options): what it refuses before it waits. The wait itself, through
the module on a controller reached over SSH, is in tests/lab/test_lab_controllers.py."""

from nixielab.ansiblerun import run_module_process


def test_without_the_action_plugin_the_mac_must_be_given(tmp_path):
    result = run_module_process("nixie.provision.wait_for_agent", {"run_dir": str(tmp_path)})
    assert result["failed"] and result["msg"].startswith("mac: required when the module runs by itself"), result


def test_a_bad_mac_is_named(tmp_path):
    result = run_module_process("nixie.provision.wait_for_agent", {"run_dir": str(tmp_path), "mac": "52:54:00:zz:00:01"})
    assert result["failed"] and result["msg"].startswith("mac: "), result


def test_no_boot_server_for_the_run_directory_fails_at_once(tmp_path):
    result = run_module_process("nixie.provision.wait_for_agent", {"run_dir": str(tmp_path), "mac": "52:54:00:00:00:01", "timeout": 5})
    assert result["failed"] and result["msg"] == "no boot server runs for %s; start it with nixie.provision.server first" % tmp_path, result
