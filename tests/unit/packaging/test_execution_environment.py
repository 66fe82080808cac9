# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection as a user's execution environment gets it: the galaxy tarball, built and installed the way
ansible-builder's galaxy stage installs it, then ansible-builder's own dependency scan (the introspect.py that the
image build runs), and the Containerfile of examples/execution-environment.yml.

The image itself is not built: no base image can be pulled here. What the build would run is read instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))
TARBALL = "%s-%s-%s.tar.gz" % (GALAXY["namespace"], GALAXY["name"], GALAXY["version"])


def _run(*argv, cwd: Path, collections: Path | None = None) -> subprocess.CompletedProcess:
    # Only ``collections`` is searched, as in the image: the repository's own collection path and the user's
    # ~/.ansible already hold a nixie.provision, and ansible-galaxy would then install nothing.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections or cwd / "no-collections")
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=300)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("build")
    _run(BIN / "ansible-galaxy", "collection", "build", ROOT, "--output-path", output, cwd=output)
    return output / TARBALL


@pytest.fixture(scope="module")
def context(tarball, tmp_path_factory) -> Path:
    """ansible-builder create on the example EE, with the tarball beside it as the example says."""
    user = tmp_path_factory.mktemp("user-ee")
    shutil.copy(ROOT / "examples" / "execution-environment.yml", user)
    shutil.copy(tarball, user)
    _run(BIN / "ansible-builder", "create", "--file", "execution-environment.yml", "--context", user / "context",
         "--output-filename", "Containerfile", cwd=user)
    return user / "context"


def test_the_tarball_holds_only_what_a_user_needs(tarball):
    with tarfile.open(tarball) as archive:
        names = {member.name.split("/")[0] for member in archive.getmembers()}
    assert names == {"CHANGELOG.rst", "COPYING", "FILES.json", "MANIFEST.json", "README.md", "agent", "bindep.txt", "changelogs", "docs", "examples",
                     "flake.nix", "meta", "nix", "playbooks", "plugins", "requirements.txt", "roles"}, sorted(names)


def test_the_containerfile_installs_the_collection_its_tools_and_runs_as_root(context):
    containerfile = (context / "Containerfile").read_text(encoding="utf-8")
    assert (context / "_build" / "collections" / TARBALL).is_file()
    assert yaml.safe_load((context / "_build" / "requirements.yml").read_text())["collections"] == [
        {"name": "collections/" + TARBALL, "type": "file"}]
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in containerfile
    assert "introspect.py introspect" in containerfile and "/output/scripts/install-from-bindep" in containerfile
    assert "nix profile install --profile /opt/nixie github:nix-community/nixos-anywhere" in containerfile
    assert "ENV PATH=/opt/nixie/bin:$PATH" in containerfile
    # The boot server's privilege check refuses the USER 1000 of ansible-builder's default.
    assert containerfile.rstrip().splitlines()[-3] == "USER 0"


def test_the_dependency_scan_finds_the_collection_requirements(context, tmp_path):
    """The galaxy stage's install from /build, then the builder stage's introspect.py over what it installed."""
    collections = tmp_path / "collections"
    _run(BIN / "ansible-galaxy", "collection", "install", "-r", "requirements.yml", "--collections-path", collections,
         cwd=context / "_build", collections=collections)
    assert (collections / "ansible_collections" / "nixie" / "provision" / "MANIFEST.json").is_file()
    _run(sys.executable, context / "_build" / "scripts" / "introspect.py", "introspect", collections,
         "--write-pip", tmp_path / "pip.txt", "--write-bindep", tmp_path / "bindep.txt", cwd=tmp_path)
    pip = (tmp_path / "pip.txt").read_text(encoding="utf-8")
    bindep = (tmp_path / "bindep.txt").read_text(encoding="utf-8")
    for requirement in ("scapy", "tftpy", "aiohttp", "wakeonlan", "sushy", "pyghmi"):
        assert any(line.startswith(requirement) and "# from collection nixie.provision" in line for line in pip.splitlines()), pip
    # ansible-builder installs ansible-core itself; the collection's pin must not fight it.
    assert "ansible-core" not in pip
    for package in ("nix [platform:rpm]", "openssh-clients [platform:rpm]", "ipxe-bootimgs-x86 [platform:rpm]", "iproute [platform:rpm]"):
        assert any(line.startswith(package) and "# from collection nixie.provision" in line for line in bindep.splitlines()), bindep
