# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A missing Python library is reported one way: ansible's wording, the import traceback for fail_json."""

from __future__ import annotations

import pytest
from ansible.module_utils.basic import missing_required_lib

from ansible_collections.nixie.provision.plugins.module_utils._bootd.io import http, tftp
from ansible_collections.nixie.provision.plugins.module_utils._errors import MissingLibrary, NixieError, require_library

TRACEBACK = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'tftpy'\n"


def test_a_missing_library_carries_ansibles_message_and_the_traceback():
    with pytest.raises(MissingLibrary) as raised:
        require_library("tftpy", TRACEBACK)
    assert isinstance(raised.value, NixieError)
    assert str(raised.value) == missing_required_lib("tftpy")
    assert raised.value.details == {"exception": TRACEBACK}


def test_a_library_that_imported_is_not_reported():
    require_library("tftpy", None)


def test_the_boot_servers_endpoints_report_their_library(monkeypatch):
    monkeypatch.setattr(tftp, "TFTPY_IMPORT_ERROR", TRACEBACK)
    with pytest.raises(MissingLibrary, match="tftpy"):
        tftp.TftpServer({})
    monkeypatch.setattr(http, "AIOHTTP_IMPORT_ERROR", TRACEBACK)
    with pytest.raises(MissingLibrary, match="aiohttp"):
        http.make_app(None)
