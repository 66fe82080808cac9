# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one host table: each host's name, installed flag, token state, last event and report, changed one way."""

from __future__ import annotations

import json

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import DuplicateMac, HostTable
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

MAC = "52:54:00:aa:00:01"
OTHER = "52:54:00:aa:00:02"
INSTALLED = "52:54:00:aa:00:03"


@pytest.fixture
def table():
    return HostTable([Host("nixie-01", MAC), Host("nixie-02", OTHER), Host("nixie-03", INSTALLED, installed=True)])


def test_a_host_is_known_before_any_event(table):
    assert table.entry(MAC) == {"host": "nixie-01", "mac": MAC, "installed": False, "released": False, "token": "none",
                                "last_event": None, "report": None}
    assert MAC in table and "52:54:00:ff:ff:ff" not in table
    assert table.entry("52:54:00:ff:ff:ff") is None and table.get(None) is None
    assert table.macs() == [MAC, OTHER, INSTALLED]


def test_duplicate_mac_is_refused_naming_both_hosts():
    with pytest.raises(DuplicateMac, match="node-1.*node-2.*52:54:00:aa:00:01") as refused:
        HostTable([Host("node-1", MAC), Host("node-2", "5254.00aa.0001")])
    assert isinstance(refused.value, NixieError)


def test_token_state_follows_mint_claim_and_install(table):
    token = table.tokens.mint(MAC)
    assert table.entry(MAC)["token"] == "awaiting_phone_home" and table.awaiting_phone_home() == [MAC]
    table.tokens.claim(token, [MAC], "10.0.0.5")
    assert table.entry(MAC)["token"] == "claimed" and table.awaiting_phone_home() == []
    table.tokens.mint(OTHER)
    host = table.set_installed(OTHER, True)
    # Installing a host voids its token: its next boot is from disk, and a late phone-home must not be taken.
    assert host.installed and table.get(OTHER).installed and table.entry(OTHER)["token"] == "none"
    assert table.set_installed(OTHER, False).installed is False


def test_events_of_the_run_become_the_hosts_last_event_and_report(table):
    report = {"ip": "10.0.0.5", "macs": [MAC]}
    table.note_event({"ts": 1.0, "mac": MAC, "step": "script"})
    table.note_event({"ts": 2.0, "mac": MAC, "step": "phone_home", "report": report})
    table.note_event({"ts": 3.0, "mac": MAC, "step": "refused"})
    table.note_event({"ts": 4.0, "mac": "52:54:00:ff:ff:ff", "step": "dhcp_ignored"})
    entry = table.entry(MAC)
    assert entry["last_event"]["step"] == "refused" and entry["report"] == report
    assert json.loads(json.dumps(table.snapshot())) == table.snapshot()
    assert sorted(table.snapshot()) == [MAC, OTHER, INSTALLED]


def test_release_names_the_hosts_still_to_serve_and_installed_ones_never_count(table):
    assert table.release(MAC) == ["nixie-02"]
    assert table.entry(MAC)["released"] is True
    assert table.release(OTHER) == []
    assert table.release(OTHER) == []
