# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status page and its event stream, on real sockets: curl, a client namespace, and headless Chromium.

The server is the boot server's HTTP app on a real port; the events are recorded through its own EventLog, as the
boot proxy, TFTP and the controller record them, while the clients watch.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import threading
import time

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io import http as http_module
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.http import BootState, Installer, make_app, start_http
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host
from ansible_collections.nixie.provision.plugins.module_utils._bootd.runfiles import status_secret
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.events import EventLog
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from nixielab.browser import Browser

MAC = "52:54:00:aa:00:01"
SKIPPED_MAC = "52:54:00:aa:00:02"
SECRET = "status-secret-0123456789abcdefghijklmnopqrstu"


def boot_state(tmp_path, base, initrd_size=1024 * 1024):
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    initrd = tmp_path / "initrd"
    with initrd.open("wb") as handle:
        handle.truncate(initrd_size)
    table = HostTable([Host("nixie-01", MAC), Host("nixie-02", SKIPPED_MAC, installed=True)])
    return BootState(table=table, installer=Installer(str(initrd), str(initrd), "init=/x/init"), ipxe_dir=str(tmp_path),
                     authorized_key="ssh-ed25519 AAAA deployer", events=EventLog(str(run_dir), table), base_urls=[base],
                     controller_secret=SECRET)


class Served:
    """The app on ``host`` (in namespace ``netns`` when given, through the fixture's loop), port picked by the kernel."""

    def __init__(self, state, loop_runner, host):
        self.state = state
        self.run = loop_runner
        self.runner = self.run(start_http(make_app(state), host, 0))
        self.host, self.port = self.runner.addresses[0][:2]
        self.base = "http://%s:%d" % (self.host, self.port)
        state.base_urls = [self.base]

    def record(self, step, mac=MAC, **fields):
        # In the loop's thread, as the proxy and HTTP record theirs (TFTP's thread is another; the log is thread-safe).
        async def record():
            self.state.events.record(mac, step, **fields)
        self.run(record())


@pytest.fixture
def served(tmp_path, request):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine, timeout=30):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)
    server = Served(boot_state(tmp_path, "http://127.0.0.1:0", getattr(request, "param", 1024 * 1024)), run, "127.0.0.1")
    yield server
    run(server.runner.cleanup())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    server.state.events.close()


def curl(*args, prefix=()):
    done = subprocess.run([*prefix, "curl", "-sS", "-D", "/dev/stderr", "-o", "-", "-w", "\n%{http_code}", *args],
                          capture_output=True, timeout=60, check=True)
    body, dummy, status = done.stdout.rpartition(b"\n")
    return int(status), done.stderr.decode("latin-1"), body.decode()


def test_the_secret_in_the_url_becomes_an_httponly_cookie_and_the_page_shows_each_host(served, tmp_path):
    served.record(contract.STEP_DHCP_OFFER)
    jar = tmp_path / "cookies"
    status, headers, dummy = curl("-c", str(jar), contract.status_url(served.base, SECRET))
    assert status == 303 and re.search(r"(?im)^location: /\r?$", headers), headers
    cookie = re.search(r"(?im)^set-cookie: (.*)$", headers).group(1)
    assert cookie.startswith("%s=%s;" % (contract.STATUS_COOKIE, SECRET)) and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, headers, page = curl("-b", str(jar), served.base + "/")
    assert status == 200 and "text/html" in headers
    assert re.search(r'<tr data-host="nixie-01" data-state="dhcp">', page) and '<tr data-host="nixie-02" data-state="skipped">' in page
    csp = re.search(r"(?im)^content-security-policy: (.*)$", headers).group(1)
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp).group(1)
    assert '<script nonce="%s">' % nonce in page and "default-src 'none'" in csp
    # Nothing from elsewhere: no URL in the page but its own stream (same origin), so it works on an air-gapped network.
    assert not re.search(r"(?i)(src|href)=\"(https?:)?//", page) and len(page) < 20000
    assert '<meta http-equiv="refresh"' in page, "without JavaScript the page reloads itself"
    # The cookie reads; it never changes anything.
    status, dummy, dummy = curl("-b", str(jar), "-X", "POST", "-d", "{}", served.base + contract.host_route(MAC, contract.HOST_RELEASED_ROUTE))
    assert status == 403
    # The secret was never logged: not in the events (refusals record paths, never query strings).
    assert SECRET not in open(served.state.events.path, encoding="utf-8").read()


def test_without_or_with_a_wrong_secret_the_page_stream_and_log_are_refused(served):
    for url in (served.base + "/", served.base + contract.STATUS_STREAM_ROUTE, served.base + contract.host_route(MAC, contract.HOST_INSTALL_LOG_ROUTE)):
        assert curl(url)[0] == 403, url
        assert curl("-b", "%s=wrong" % contract.STATUS_COOKIE, url)[0] == 403, url
    status, headers, dummy = curl(contract.status_url(served.base, SECRET[:-1] + "x"))
    assert status == 403 and "set-cookie" not in headers.lower()
    refusals = [line for line in open(served.state.events.path, encoding="utf-8") if '"refused"' in line]
    assert len(refusals) == 7 and all(SECRET[:-1] not in line for line in refusals)


def test_the_status_secret_the_playbook_prints_opens_the_page_and_nothing_of_the_controller(served, tmp_path):
    viewer = status_secret(SECRET)
    assert viewer != SECRET and SECRET not in viewer
    served.record(contract.STEP_INSTALL, phase="disko")
    log = tmp_path / "run" / "nixie-01" / contract.HOST_INSTALL_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("### Formatting hard drive with disko ###\n")
    jar = tmp_path / "cookies"
    status, headers, dummy = curl("-c", str(jar), contract.status_url(served.base, viewer))
    assert status == 303 and "%s=%s;" % (contract.STATUS_COOKIE, viewer) in headers, headers
    assert curl("-b", str(jar), served.base + "/")[0] == 200
    assert curl("-b", str(jar), served.base + contract.host_route(MAC, contract.HOST_INSTALL_LOG_ROUTE))[2].startswith("### Formatting")
    with subprocess.Popen(["curl", "-sSN", "-b", str(jar), served.base + contract.STATUS_STREAM_ROUTE], stdout=subprocess.PIPE, text=True) as stream:
        try:
            assert stream.stdout.readline().startswith("data: ")
        finally:
            stream.kill()
    # Neither as the cookie nor as the controller's header does it open a controller route, to read or to change.
    for presented in (("-b", str(jar)), ("-H", "%s: %s" % (contract.CONTROLLER_SECRET_HEADER, viewer))):
        for route in (contract.EVENTS_ROUTE, contract.STATE_ROUTE, contract.host_route(MAC)):
            assert curl(*presented, served.base + route)[0] == 403, (presented, route)
        assert curl(*presented, "-X", "POST", "-d", "{}", served.base + contract.host_route(MAC, contract.HOST_RELEASED_ROUTE))[0] == 403
    assert not served.state.table.entry(MAC)["released"]


def test_a_machine_on_the_boot_network_gets_nothing_from_the_page(netns_pair, tmp_path):
    with netns_pair.event_loop(netns_pair.server_ns) as loop:
        server = Served(boot_state(tmp_path, "http://%s:0" % netns_pair.server_ip), loop.run, netns_pair.server_ip)
        try:
            machine = ("ip", "netns", "exec", netns_pair.client_ns)
            netns_pair.give_client_address()
            for url in (server.base + "/", server.base + contract.STATUS_STREAM_ROUTE, server.base + contract.EVENTS_ROUTE):
                assert curl(url, prefix=machine)[0] == 403, url
            assert curl(contract.status_url(server.base, "guess"), prefix=machine)[0] == 403
            # The controller, with the secret, from where it runs.
            controller = ("ip", "netns", "exec", netns_pair.server_ns)
            assert curl("-b", "%s=%s" % (contract.STATUS_COOKIE, SECRET), server.base + "/", prefix=controller)[0] == 200
        finally:
            loop.run(server.runner.cleanup())
            server.state.events.close()


def test_the_stream_sends_the_table_at_each_change_and_is_bounded(served, monkeypatch):
    monkeypatch.setattr(http_module, "STATUS_STREAMS", 2)
    cookie = "%s=%s" % (contract.STATUS_COOKIE, SECRET)
    url = served.base + contract.STATUS_STREAM_ROUTE
    streams = [subprocess.Popen(["curl", "-sSN", "-b", cookie, url], stdout=subprocess.PIPE, text=True) for dummy in range(2)]
    try:
        first = streams[0].stdout.readline()
        assert first.startswith("data: ") and 'data-state=\\"waiting\\"' in first
        streams[1].stdout.readline()
        assert curl("-b", cookie, url)[0] == 503, "a third stream is one too many"
        served.record(contract.STEP_SCRIPT, ip="127.0.0.1")
        deadline = time.monotonic() + 10
        while 'data-state=\\"ipxe\\"' not in streams[0].stdout.readline():
            assert time.monotonic() < deadline
    finally:
        for stream in streams:
            stream.kill()
            stream.wait()
    deadline = time.monotonic() + 10
    while served.state.status_streams:
        assert time.monotonic() < deadline, "closed streams must be let go"
        time.sleep(0.2)


def test_chromium_watches_a_host_move_live_without_a_reload(served, tmp_path):
    with Browser(tmp_path / "chromium") as browser:
        browser.open(contract.status_url(served.base, SECRET))
        assert browser.evaluate("location.search") == "", "the secret leaves the address bar"
        browser.evaluate("window.loadedOnce = 'yes'")

        def state():
            return browser.evaluate("document.querySelector('tr[data-host=\"nixie-01\"]').dataset.state")
        seen = [state()]
        for step, fields in ((contract.STEP_DHCP_OFFER, {}), (contract.STEP_SCRIPT, {"ip": "127.0.0.1"}),
                             (contract.STEP_PHONE_HOME, {"ip": "127.0.0.1"}), (contract.STEP_INSTALL, {"phase": "disko"})):
            served.record(step, **fields)
            deadline = time.monotonic() + 15
            while state() == seen[-1]:
                assert time.monotonic() < deadline, "the page did not move on from %s" % seen[-1]
                time.sleep(0.1)
            seen.append(state())
        assert seen == ["waiting", "dhcp", "ipxe", "phone_home", "installing"]
        assert browser.evaluate("window.loadedOnce") == "yes" and browser.evaluate("Number(document.body.dataset.updates)") >= 4
        assert "10.0.0" not in browser.evaluate("document.body.innerText") and "127.0.0.1" in browser.evaluate("document.body.innerText")
        assert browser.screenshot(tmp_path / "status.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Far more than loopback's socket buffers hold (a few MiB each way), as a real initrd is: sendfile then waits on the client.
@pytest.mark.parametrize("served", [96 * 1024 * 1024], indirect=True)
def test_the_initrd_download_is_counted_from_the_socket_while_it_runs(served):
    served.state.table.note_boot_address(MAC, "127.0.0.1")
    signature = served.state.file_signature(MAC)
    size = os.path.getsize(served.state.installer.initrd)
    # A slow reader: the kernel's send buffer fills, sendfile waits, and only what the reader took is acknowledged.
    download = subprocess.Popen(["curl", "-sS", "--limit-rate", "24M", "-o", "/dev/null",
                                 served.base + contract.file_path(MAC, signature, contract.STEP_INITRD)])
    try:
        deadline = time.monotonic() + 30
        counts = []
        while len(counts) < 3:
            assert time.monotonic() < deadline, counts
            transfer = served.state.status_rows(time.time())[0]["transfer"]
            if transfer and 0 < transfer["bytes"] < size:
                counts.append(transfer["bytes"])
                assert transfer["size"] == size and transfer["rate"] > 0 and not transfer["complete"]
            time.sleep(0.7)
        assert counts == sorted(counts) and counts[-1] > counts[0], "the count grows as the client reads"
        assert download.wait(30) == 0
    finally:
        download.kill()
        download.wait()
    row = served.state.status_rows(time.time())[0]
    assert row["state"] == "initrd" and row["transfer"]["bytes"] == size and row["transfer"]["complete"]
    assert not served.state.sending()


def test_progress_reports_are_validated_and_named(served):
    url = served.base + contract.host_route(MAC, contract.HOST_PROGRESS_ROUTE)
    admin = "%s: %s" % (contract.CONTROLLER_SECRET_HEADER, SECRET)
    for body, message in (('{"step": "reboot"}', "step: must be one of install, power"),
                          ('{"step": "install", "phase": "kexec"}', "phase: must be one of started, disko"),
                          ('{"step": "install", "phase": "failed", "error": "a\\u001b[31mred"}', "error: must be text"),
                          ('{"step": "power", "action": "explode"}', "action: must be one of on, boot"),
                          ('[1]', "body: must be a JSON object")):
        status, dummy, answer = curl("-H", admin, "-H", "Content-Type: application/json", "-d", body, url)
        assert status == 400 and message in answer, (body, answer)
    status, dummy, answer = curl("-H", admin, "-d", '{"step": "install", "phase": "failed", "error": "exit 1\\nlast lines"}', url)
    assert status == 200, answer
    assert curl("-d", '{"step": "install", "phase": "done"}', url)[0] == 403, "the controller's only"
    row = served.state.status_rows(time.time())[0]
    assert row["state"] == "failed" and row["last_error"] == "exit 1\nlast lines"
    assert served.state.table.entry(MAC)["last_event"] is None, "a host's last event is its own, never the controller's report"
