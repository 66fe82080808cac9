"""Start or stop Nixie's boot server through its module-level API, inside the caller's network namespace.

``python -m bench.nixied start CONFIG`` runs ``server.start`` (validation, preflight, the detached daemon the
``nixie.provision.server`` module starts) and prints the state it publishes; ``stop RUN_DIR`` stops it.
Run under ``ip netns exec`` so the daemon lives in the controller namespace of a bench lab.
"""

from __future__ import annotations

import json
import sys

from ansible_collections.nixie.provision.plugins.module_utils._bootd import daemon, server


def main(argv):
    if argv[0] == "start":
        with open(argv[1], encoding="utf-8") as handle:
            print(json.dumps(server.start(json.load(handle))))
    else:
        daemon.stop(argv[1])


if __name__ == "__main__":
    main(sys.argv[1:])
