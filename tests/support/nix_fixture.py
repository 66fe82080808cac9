"""The nixpkgs-free fixture flake (tests/fixtures/flake-installer) for tests of the Nix code: an offline Nix
configuration for every test, the flake materialised per test, and a recorder of the nix calls made.

Import the fixtures into a test module: ``from nix_fixture import flake, offline_nix``."""

import importlib.util
import os
import subprocess

import pytest

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "flake-installer", "prepare.py")
_spec = importlib.util.spec_from_file_location("flake_installer_prepare", FIXTURE)
prepare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare)

KERNEL = b"fixture kernel image\n" * 64
INITRD = b"fixture initrd\n" * 64


@pytest.fixture(autouse=True)
def offline_nix(tmp_path_factory, monkeypatch):
    for name, value in prepare.offline_nix_env(tmp_path_factory.mktemp("nix-conf")).items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def flake(tmp_path):
    return prepare.materialise(tmp_path / "flake", KERNEL, INITRD)


def nix_eval_raw(installable):
    """An independent `nix eval --raw`, to check what the code under test computes."""
    return subprocess.run(
        ["nix", "--extra-experimental-features", "nix-command flakes", "eval", "--raw", installable],
        capture_output=True, text=True, check=True,
    ).stdout


class Recorder:
    """Wraps Nix.run to record each call's subcommand and arguments."""

    def __init__(self, nix):
        self.calls = []
        self._run = nix.run
        nix.run = self

    def __call__(self, subcommand, *args, **kwargs):
        self.calls.append((subcommand,) + args)
        return self._run(subcommand, *args, **kwargs)
