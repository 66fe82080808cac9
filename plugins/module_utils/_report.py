# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run's report: the status page's table frozen, each host's timeline and durations, written into the run directory.

It is built from ``events.jsonl`` by the same state machine the live page uses (``_bootd.state.progress``), so the
report says what the page said; it outlives the boot server, and its HTML opens from disk.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.page import render_document
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.events import read_events
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.progress import replay, totals
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._mac import normalize_mac


class ReportInputError(NixieError):
    """The hosts given for the report are not what it needs; the message names the field."""


def report_hosts(hosts: Iterable[Mapping[str, Any]]) -> Tuple[Tuple[str, str, bool], ...]:
    """``(name, mac, installed)`` of each host; raise ReportInputError naming the entry and field that is wrong."""
    parsed = []
    for index, host in enumerate(hosts):
        if not isinstance(host, Mapping) or not isinstance(host.get("name"), str) or not host["name"]:
            raise ReportInputError("hosts[%d].name: each host needs its name" % index)
        try:
            mac = normalize_mac(str(host.get("mac")))
        except ValueError:
            raise ReportInputError("hosts[%d].mac: %r (host %s) is not a MAC address" % (index, host.get("mac"), host["name"])) from None
        parsed.append((host["name"], mac, bool(host.get("installed", False))))
    return tuple(parsed)


def build_report(run_dir: str, hosts: Iterable[Tuple[str, str, bool]], now: float, since: Optional[float] = None) -> Dict[str, Any]:
    """The report of the run in ``run_dir`` for ``hosts``, from the events recorded at or after ``since``."""
    rows = replay(hosts, read_events(run_dir), since).rows(now)
    for row in rows:
        log = contract.host_file(run_dir, row["host"], contract.HOST_INSTALL_LOG)
        row["install_log"] = log if os.path.isfile(log) else None
    return {"generated": now, "since": since, "run_dir": run_dir, "hosts": rows, "totals": totals(rows)}


def write_report(run_dir: str, report: Mapping[str, Any]) -> Tuple[str, str]:
    """Write ``report.json`` and ``report.html`` into ``run_dir``; return their paths."""
    json_path = contract.run_file(run_dir, contract.REPORT_JSON)
    html_path = contract.run_file(run_dir, contract.REPORT_HTML)

    def log_href(row):
        # Relative to the report, so the run directory can be copied elsewhere whole.
        return os.path.relpath(row["install_log"], run_dir) if row.get("install_log") else None
    document = render_document(report["hosts"], report["totals"], title="Nixie run report: %d hosts" % len(report["hosts"]),
                               generated=report["generated"], timelines=True, log_href=log_href)
    for path, text in ((json_path, json.dumps(report, indent=1, sort_keys=True) + "\n"), (html_path, document)):
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(path + ".tmp", path)
        except OSError as exc:
            raise NixieError("cannot write the report %s: %s" % (path, exc.strerror or exc)) from None
    return json_path, html_path
