# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-host event log: one JSON line per event, each host's last event in the host table, safe across threads."""

from __future__ import annotations

import json
import threading

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.events import EVENT_BURST, UNKNOWN_MACS, EventLog
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.limits import Budget
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable

MAC = "52:54:00:aa:00:01"


def event_log(run_dir, *hosts, **options):
    table = HostTable(hosts)
    return EventLog(str(run_dir), table, **options), table


@pytest.fixture
def logged(tmp_path):
    log, table = event_log(tmp_path, Host("nixie-01", MAC))
    yield log, table
    log.close()


@pytest.fixture
def log(logged):
    return logged[0]


def lines(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_each_event_is_one_flushed_json_line(log):
    log.record(MAC, "script", ip="10.0.0.5")
    # Read while the log is still open: the line must already be on disk.
    (event,) = lines(log.path)
    assert event["mac"] == MAC and event["host"] == "nixie-01" and event["step"] == "script"
    assert event["ip"] == "10.0.0.5"
    assert isinstance(event["ts"], float)


def test_the_table_keeps_each_hosts_last_event_and_report(logged):
    log, table = logged
    report = {"ip": "10.0.0.5", "macs": [MAC]}
    log.record(MAC, "script")
    log.record(MAC, "phone_home", report=report)
    log.record(MAC, "refused", reason="replay")
    entry = table.snapshot()[MAC]
    assert entry["host"] == "nixie-01"
    assert entry["last_event"]["step"] == "refused"
    assert entry["report"] == report
    assert json.loads(json.dumps(table.snapshot())) == table.snapshot()


def test_unknown_senders_reach_the_file_but_not_the_table(logged):
    log, table = logged
    log.record(None, "tftp_start", ip="10.0.0.9", file="ipxe.efi")
    log.record("52:54:00:ff:ff:ff", "dhcp_ignored", reason="unknown MAC address")
    assert [event["mac"] for event in lines(log.path)] == [None, "52:54:00:ff:ff:ff"]
    assert table.entry(MAC)["last_event"] is None
    assert table.entry("52:54:00:ff:ff:ff") is None


def test_reserved_fields_cannot_be_overwritten(log):
    event = log.record(MAC, "kernel", host="forged", ts=0.0, ip="10.0.0.5")
    assert event["host"] == "nixie-01" and event["ts"] > 0 and event["ip"] == "10.0.0.5"


def test_unknown_step_is_a_programming_error(log):
    with pytest.raises(ValueError):
        log.record(MAC, "kernal")


def test_appends_to_an_existing_log(tmp_path):
    first, dummy = event_log(tmp_path)
    first.record(MAC, "script")
    first.close()
    second, dummy = event_log(tmp_path)
    second.record(MAC, "kernel")
    second.close()
    assert [event["step"] for event in lines(second.path)] == ["script", "kernel"]


def test_concurrent_writers_never_interleave_lines(tmp_path):
    threads_count, per_thread = 8, 250
    # A budget that lets every line through: this is about whole lines, not about floods.
    log, table = event_log(tmp_path, *[Host("node-%d" % index, "52:54:00:aa:01:%02x" % index) for index in range(threads_count)],
                           budget=Budget(per_thread, 60.0))
    barrier = threading.Barrier(threads_count)

    def writer(index):
        barrier.wait()
        for seq in range(per_thread):
            log.record("52:54:00:aa:01:%02x" % index, "tftp_done", seq=seq, padding="x" * 2000)

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = lines(log.path)  # json.loads fails on any torn or interleaved line
    assert len(events) == threads_count * per_thread
    for index in range(threads_count):
        mac = "52:54:00:aa:01:%02x" % index
        assert [e["seq"] for e in events if e["mac"] == mac] == list(range(per_thread))
        assert table.entry(mac)["last_event"]["seq"] == per_thread - 1
    log.close()


def test_subscribers_hear_of_each_event_after_it_is_recorded(tmp_path):
    log, table = event_log(tmp_path, Host("nixie-01", "52:54:00:aa:00:01"))
    heard = []
    log.subscribe(lambda event: heard.append((event["step"], table.entry(event["mac"])["last_event"]["step"] if event["mac"] else None)))
    log.record("52:54:00:aa:00:01", "dhcp_offer")
    log.record(None, "tftp_start")
    assert heard == [("dhcp_offer", "dhcp_offer"), ("tftp_start", None)]
    log.close()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_flood_of_unknown_macs_leaves_a_few_lines_and_one_count(tmp_path):
    clock = Clock()
    log, table = event_log(tmp_path, Host("nixie-01", MAC), budget=Budget(EVENT_BURST, 10.0, clock=clock))
    for index in range(5000):
        log.record("02:00:00:%02x:%02x:%02x" % (index >> 16, (index >> 8) & 0xFF, index & 0xFF), "dhcp_ignored", reason="unknown MAC address")
    # The host of the run has a budget of its own, untouched by the flood.
    assert log.record(MAC, "dhcp_ignored", reason="not a PXE request") is not None
    clock.now += 10.0
    log.record(MAC, "script")
    log.close()
    events = lines(log.path)
    assert [e["step"] for e in events].count("dhcp_ignored") == EVENT_BURST + 1
    (count,) = [e for e in events if e["step"] == "suppressed"]
    assert count["count"] == 5000 - EVENT_BURST and count["of"] == "dhcp_ignored" and count["sender"] == UNKNOWN_MACS
    assert count["mac"] is None
    # Counted, not stored: the table knows its hosts only, and its host's last event is real progress.
    assert set(table.snapshot()) == {MAC} and table.entry(MAC)["last_event"]["step"] == "script"


def test_every_host_of_a_rack_larger_than_the_strangers_bound_keeps_its_own_progress(tmp_path):
    macs = ["02:bd:00:00:%02x:%02x" % (index >> 8, index & 0xFF) for index in range(3000)]
    log, table = event_log(tmp_path, *(Host("m%d" % index, mac) for index, mac in enumerate(macs)))
    for step in ("dhcp_offer", "tftp_done"):
        assert all(log.record(mac, step) is not None for mac in macs)
    log.close()
    assert {mac for mac, entry in table.snapshot().items() if entry["last_event"]["step"] == "tftp_done"} == set(macs)


def test_a_host_past_its_budget_is_counted_under_its_mac_and_clients_by_address(tmp_path):
    clock = Clock()
    log, dummy = event_log(tmp_path, Host("nixie-01", MAC), budget=Budget(3, 10.0, clock=clock))
    for dummy_index in range(10):
        log.record(MAC, "dhcp_offer")
        log.record(None, "refused", ip="10.0.0.9", status=404)
        log.record(None, "refused", ip="10.0.0.10", status=404)
    log.close()  # what is left out of an interval that has not ended is counted at close
    counts = {(e["mac"], e.get("sender"), e["of"]): e["count"] for e in lines(log.path) if e["step"] == "suppressed"}
    assert counts == {(MAC, None, "dhcp_offer"): 7, (None, "10.0.0.9", "refused"): 7, (None, "10.0.0.10", "refused"): 7}
