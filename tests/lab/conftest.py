"""Fixtures for the lab tests: the test installer (built once per session) and a fresh lab network per test.

Lab tests need root (network namespaces, taps, raw sockets); without it they are skipped, saying so.
"""

from __future__ import annotations

import os

import pytest

from nixielab import LabNetwork, build_installer

NEEDS_ROOT = "the lab needs root: it creates network namespaces, bridges, taps and raw sockets"


def pytest_runtest_setup(item):
    if os.geteuid() != 0 and (item.get_closest_marker("lab") or item.get_closest_marker("netns")):
        pytest.skip(NEEDS_ROOT)


@pytest.fixture(scope="session")
def installer():
    """The test installer: kernel, initrd and command line (cached under .cache/lab-installer/)."""
    if os.geteuid() != 0:
        pytest.skip(NEEDS_ROOT)
    return build_installer()


@pytest.fixture
def lab(request):
    """A started LabNetwork with its own namespaces, stopped after the test.

    Options go through indirect parametrisation: @pytest.mark.parametrize("lab", [{"ipv6": True}], indirect=True).
    """
    with LabNetwork(**getattr(request, "param", {})) as network:
        yield network
