"""Makes the collection importable as ansible_collections.nixie.provision without an installed copy."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".cache", "collections")
_link = os.path.join(COLLECTIONS, "ansible_collections", "nixie", "provision")
if not os.path.islink(_link):
    os.makedirs(os.path.dirname(_link), exist_ok=True)
    os.symlink(REPO, _link)
for _path in (COLLECTIONS, os.path.join(REPO, "tests", "lab")):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS)

# Ansible's collection finder, which the inventory plugin's tests need, cannot take over a collection package that was
# imported before it was installed: install it before any test module imports the collection.
from ansible.plugins.loader import init_plugin_loader  # noqa: E402  (needs ANSIBLE_COLLECTIONS_PATH set above)

init_plugin_loader()
