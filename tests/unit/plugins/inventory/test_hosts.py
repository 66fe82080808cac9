"""The nixie.provision.hosts inventory plugin, fed real files through Ansible's own inventory machinery."""

import json

import pytest
from ansible.errors import AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader
from ansible.template import Templar


def _plugin():
    # Through Ansible's loader, so the plugin's DOCUMENTATION options are what get_option reads.
    return inventory_loader.get("nixie.provision.hosts")


def _load(tmp_path, hosts, config="plugin: nixie.provision.hosts\npath: hosts.json\n"):
    (tmp_path / "hosts.json").write_text(hosts if isinstance(hosts, str) else json.dumps(hosts))
    config_path = tmp_path / "inventory.nixie.yml"
    config_path.write_text(config)
    plugin = _plugin()
    inventory = InventoryData()
    loader = DataLoader()
    plugin.templar = Templar(loader=loader)
    assert plugin.verify_file(str(config_path))
    plugin.parse(inventory, loader, str(config_path), cache=False)
    return inventory


def _vars(inventory, name):
    return {key: str(value) if isinstance(value, str) else value for key, value in inventory.get_host(name).vars.items()
            if key not in ("inventory_file", "inventory_dir")}


def test_seed_schema_becomes_hosts_with_normalised_vars(tmp_path):
    inventory = _load(tmp_path, {"nixie-01": {"mac_address": "BC-24-11-D0-28-34"}, "nixie-02": {"mac_address": "bc24.11d0.2835"}})
    assert sorted(inventory.groups["nixie"].hosts, key=lambda h: h.name)[0].name == "nixie-01"
    assert [h.name for h in inventory.groups["nixie"].hosts] == ["nixie-01", "nixie-02"]
    first = _vars(inventory, "nixie-01")
    assert first["nixie_mac"] == "bc:24:11:d0:28:34"
    assert first["nixie_flake_attr"] == "nixie-01"
    assert first["nixie_disks_may_be_wiped"] is False
    assert first["nixie_power"] == {"driver": "wol"}
    assert "ansible_host" not in first and "nixie_flake" not in first
    assert _vars(inventory, "nixie-02")["nixie_mac"] == "bc:24:11:d0:28:35"


def test_optional_fields_flake_and_group(tmp_path):
    hosts = {"db": {
        "mac_address": "52:54:00:00:00:01", "ip": "fd00::0:5", "interface": "eno1", "flake_attr": "database",
        "wol": {"broadcast": "10.0.0.255", "port": 7}, "disks_may_be_wiped": True,
    }}
    inventory = _load(tmp_path, hosts, "plugin: nixie.provision.hosts\npath: hosts.json\nflake: ./infra\ngroup: metal\n")
    assert [h.name for h in inventory.groups["metal"].hosts] == ["db"]
    assert _vars(inventory, "db") == {
        "nixie_mac": "52:54:00:00:00:01", "nixie_ip": "fd00::5", "ansible_host": "fd00::5", "nixie_interface": "eno1",
        "nixie_flake_attr": "database", "nixie_wol_broadcast": "10.0.0.255", "nixie_wol_port": 7,
        "nixie_disks_may_be_wiped": True, "nixie_flake": str(tmp_path / "infra"), "nixie_power": {"driver": "wol"},
    }


def test_power_settings_become_nixie_power(tmp_path):
    hosts = {
        "r": {"mac_address": "52:54:00:00:00:01", "power": {
            "driver": "redfish", "address": "https://10.0.0.21", "system": "/redfish/v1/Systems/1", "username": "admin",
            "password_env": "BMC_PASSWORD", "ca_path": "/etc/nixie/bmc-ca.pem", "validate_certs": True, "boot_mode": "uefi"}},
        "i": {"mac_address": "52:54:00:00:00:02", "power": {"driver": "ipmi", "address": "10.0.0.22", "port": 623, "username": "admin"}},
        "w": {"mac_address": "52:54:00:00:00:03", "power": {"driver": "wol"}},
    }
    inventory = _load(tmp_path, hosts)
    assert _vars(inventory, "r")["nixie_power"] == dict(hosts["r"]["power"])
    assert _vars(inventory, "i")["nixie_power"] == {"driver": "ipmi", "address": "10.0.0.22", "port": 623, "username": "admin"}
    assert _vars(inventory, "w")["nixie_power"] == {"driver": "wol"}


def test_flake_uri_is_kept_as_given(tmp_path):
    inventory = _load(tmp_path, {"a": {"mac_address": "52:54:00:00:00:01"}}, "plugin: nixie.provision.hosts\nflake: github:me/infra\n")
    assert _vars(inventory, "a")["nixie_flake"] == "github:me/infra"


def test_constructed_groups(tmp_path):
    hosts = {"a": {"mac_address": "52:54:00:00:00:01", "disks_may_be_wiped": True}, "b": {"mac_address": "52:54:00:00:00:02"}}
    inventory = _load(tmp_path, hosts, "plugin: nixie.provision.hosts\ngroups:\n  wipeable: nixie_disks_may_be_wiped\n")
    assert [h.name for h in inventory.groups["wipeable"].hosts] == ["a"]


def test_templates_in_the_file_are_data(tmp_path):
    # ansible-core 2.19+ (the collection's minimum) trusts no inventory string as a template unless marked so.
    inventory = _load(tmp_path, {"a": {"mac_address": "52:54:00:00:00:01", "interface": "{{x}}"}})
    value = inventory.get_host("a").vars["nixie_interface"]
    assert Templar(loader=DataLoader(), variables={"x": "evaluated"}).template(value) == "{{x}}"


def test_verify_file_wants_a_nixie_config_name(tmp_path):
    other = tmp_path / "hosts.yml"
    other.write_text("plugin: nixie.provision.hosts\n")
    assert not _plugin().verify_file(str(other))


@pytest.mark.parametrize("hosts, expected", [
    ({"a": {"mac_address": "52:54:00:00:00:0g"}}, "host 'a': field 'mac_address': '52:54:00:00:00:0g' is not a MAC address"),
    ({"a": {"mac_address": 5254}}, "host 'a': field 'mac_address': a MAC address must be a string"),
    ({"a": {"mac_address": "52:54:00:00:00:01"}, "b": {"mac_address": "52-54-00-00-00-01"}},
     "host 'b': mac_address 52:54:00:00:00:01 is already used by host 'a'"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "mac": "x"}}, "host 'a': unknown field 'mac' (known: "),
    ({"a": {"mac_address": "52:54:00:00:00:01", "wol": {"bcast": "1.2.3.4"}}}, "host 'a': unknown field 'wol.bcast'"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "wol": {"port": 70000}}}, "host 'a': field 'wol.port': must be a UDP port"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "wol": "10.0.0.255"}}, "host 'a': field 'wol' must be an object"),
    ({"a": "52:54:00:00:00:01"}, "host 'a': must be an object such as"),
    ({"a": {}}, "host 'a': field 'mac_address' is required"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "ip": "10.0.0.300"}}, "host 'a': field 'ip': '10.0.0.300' is not an IPv4 or IPv6 address"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "interface": "a very long name"}}, "host 'a': field 'interface':"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "flake_attr": "x#y"}}, "host 'a': field 'flake_attr': flake attribute 'x#y'"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "disks_may_be_wiped": "yes"}},
     "host 'a': field 'disks_may_be_wiped': must be true or false, got \"yes\""),
    ({"bad name": {"mac_address": "52:54:00:00:00:01"}}, "host name 'bad name' must be"),
    ({"nixie-01\n": {"mac_address": "52:54:00:00:00:01"}}, "host name 'nixie-01\\n' must be"),
    ({"localhost": {"mac_address": "52:54:00:00:00:01"}}, "host name 'localhost' is reserved by Ansible"),
    ({"all": {"mac_address": "52:54:00:00:00:01"}}, "host name 'all' is reserved by Ansible"),
    ({"LocalHost": {"mac_address": "52:54:00:00:00:01"}}, "host name 'LocalHost' is reserved by Ansible"),
    ({"n" * 254: {"mac_address": "52:54:00:00:00:01"}}, "is longer than 253 characters"),
    ({"a": {"mac_address": "ff:ff:ff:ff:ff:ff"}}, "field 'mac_address': 'ff:ff:ff:ff:ff:ff' is the broadcast MAC address"),
    ({"a": {"mac_address": "01:00:5e:00:00:fb"}}, "field 'mac_address': '01:00:5e:00:00:fb' is a multicast MAC address"),
    ({"a": {"mac_address": "33:33:00:00:00:01"}}, "field 'mac_address': '33:33:00:00:00:01' is a multicast MAC address"),
    ({"a": {"mac_address": "00:00:00:00:00:00"}}, "field 'mac_address': '00:00:00:00:00:00' is the all-zero MAC address"),
    ("[" * 50000 + "]" * 50000, "invalid JSON: nested too deeply"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "power": {"driver": "redfish", "address": "https://10.0.0.21", "username": "admin",
                                                          "password": "hunter2"}}},
     "host 'a': field power.password: passwords never go into the inventory file"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "power": {"driver": "amt"}}}, "host 'a': field power.driver: must be one of wol, redfish, ipmi"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "power": {"driver": "ipmi", "address": "10.0.0.22"}}},
     "host 'a': field power.username: required for the ipmi driver"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "power": {"driver": "ipmi", "address": "10.0.0.22", "username": "u", "port": 0}}},
     "host 'a': field power.port: must be a port number"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "power": {"driver": "ipmi", "address": "10.0.0.22", "username": "u", "system": "/x"}}},
     "host 'a': field power.system: not a setting of the ipmi driver"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "power": {"driver": "redfish", "address": "ftp://bmc", "username": "u"}}},
     "host 'a': field power.address: 'ftp://bmc' is not a BMC URL"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "power": {"driver": "redfish", "address": "https://bmc", "username": "u",
                                                          "system": "Systems/1"}}},
     "host 'a': field power.system: 'Systems/1' is not a Redfish system path"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "power": {"driver": "redfish", "address": "https://bmc", "username": "u",
                                                          "password_env": "not a name"}}},
     "host 'a': field power.password_env: 'not a name' is not an environment variable name"),
    ({"a": {"mac_address": "52:54:00:00:00:01", "power": "redfish"}}, "host 'a': field power: must be an object"),
    (["a"], "the top level must be an object"),
    ('{"a": {"mac_address": "52:54:00:00:00:01"},\n "a": {"mac_address": "52:54:00:00:00:02"}}', "key 'a' appears twice"),
    ('{"a": {"mac_address": "52:54:00:00:00:01"}\n "b": {}}', "invalid JSON at line 2, column 2: Expecting ',' delimiter"),
])
def test_errors_name_the_file_host_and_field(tmp_path, hosts, expected):
    with pytest.raises(AnsibleParserError) as caught:
        _load(tmp_path, hosts)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "hosts.json") + ": ")
    assert expected in message


def test_every_problem_is_reported_at_once(tmp_path):
    with pytest.raises(AnsibleParserError) as caught:
        _load(tmp_path, {"a": {"mac_address": "nope"}, "b": {"mac_address": "52:54:00:00:00:01", "colour": "red"}})
    assert "host 'a': field 'mac_address'" in str(caught.value)
    assert "host 'b': unknown field 'colour'" in str(caught.value)


def test_missing_file_is_named(tmp_path):
    config_path = tmp_path / "x.nixie.yml"
    config_path.write_text("plugin: nixie.provision.hosts\npath: nowhere.json\n")
    with pytest.raises(AnsibleParserError, match="nowhere.json: cannot read"):
        _plugin().parse(InventoryData(), DataLoader(), str(config_path), cache=False)
