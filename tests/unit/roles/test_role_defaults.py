# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The flow's role defaults are defined once (roles/common) and every role documents exactly those values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[3] / "roles"
FLOW_ROLES = ("netboot", "install", "provision")


def _yaml(path: Path):
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


DEFAULTS = _yaml(ROLES / "common" / "defaults" / "main.yml")


def _entry_points(role: str) -> dict:
    return _yaml(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]


def _options(role: str) -> dict:
    return _entry_points(role)["main"]["options"]


@pytest.mark.parametrize("role, entry_point", [(role, entry_point) for role in FLOW_ROLES for entry_point in _entry_points(role)])
def test_argument_specs_document_the_shared_defaults(role, entry_point):
    for name, option in _entry_points(role)[entry_point]["options"].items():
        if name in DEFAULTS:
            assert option.get("default") == DEFAULTS[name], "%s: %s documents %r, roles/common defines %r" % (
                role, name, option.get("default"), DEFAULTS[name])
        else:
            assert "default" not in option, "%s: %s documents a default that roles/common does not define" % (role, name)


@pytest.mark.parametrize("role", FLOW_ROLES)
def test_each_flow_role_takes_its_defaults_from_common_alone(role):
    assert not (ROLES / role / "defaults").exists(), "%s: defaults belong in roles/common" % role
    dependencies = _yaml(ROLES / role / "meta" / "main.yml")["dependencies"]
    assert {"role": "nixie.provision.common"} in dependencies


def test_every_shared_default_is_documented_by_a_role():
    documented = {name for role in FLOW_ROLES for name in _options(role)}
    assert set(DEFAULTS) <= documented, sorted(set(DEFAULTS) - documented)
