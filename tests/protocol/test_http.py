# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot server's HTTP side, against real sockets: aiohttp's test client and curl on loopback.

Several loopback addresses (127.0.0.x all reach `lo`) stand in for different machines: curl's
``--interface`` picks the source address the server sees.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import threading

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ansible_collections.nixie.provision.plugins.module_utils._bootclient import BootServerClient, BootServerUnavailable, HostRefused
from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.events import EventLog
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.http import (
    API_BODY_LIMIT,
    BootState,
    Installer,
    make_app,
    start_http,
)
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io import http as http_module
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.limits import Budget
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from ipxe_scripts import script_values

MAC = "52:54:00:aa:00:01"
INSTALLED_MAC = "52:54:00:aa:00:02"
CMDLINE = "init=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-installer/init loglevel=4"
SECRET = "s3cret-of-this-run-0123456789abcdefghijklmno"
ADMIN = {contract.CONTROLLER_SECRET_HEADER: SECRET}
DEPLOYER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7n8yY9tDm3rPsn0pO3m2b3QH7O0Y1pFq3u1cJ3B0Zx deployer@controller"


def ssh_public_key(directory, name="host"):
    path = os.path.join(str(directory), name)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@installer", "-f", path], check=True)
    with open(path + ".pub", encoding="ascii") as handle:
        return handle.read().strip()


@pytest.fixture
def files(tmp_path):
    """Kernel, initrd and an iPXE directory that also holds things that must never be served."""
    paths = {"kernel": tmp_path / "bzImage", "initrd": tmp_path / "initrd", "ipxe": tmp_path / "ipxe"}
    paths["kernel"].write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    paths["initrd"].write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    paths["ipxe"].mkdir()
    (paths["ipxe"] / "ipxe.efi").write_bytes(os.urandom(850528))
    (paths["ipxe"] / "undionly.kpxe").write_bytes(os.urandom(74213))
    (paths["ipxe"] / "secret.txt").write_bytes(b"NOT-FOR-CLIENTS")
    (paths["ipxe"] / "passwd").symlink_to("/etc/passwd")
    (paths["ipxe"] / "etc").symlink_to("/etc")
    paths["run"] = tmp_path / "run"
    paths["run"].mkdir()
    return paths


def make_state(files, base_urls=("http://127.0.0.1:8080",)):
    table = HostTable([Host("nixie-01", MAC), Host("nixie-02", INSTALLED_MAC, installed=True)])
    # 127.0.0.1 plays nixie-01: the address its DHCP exchange took, as the boot proxy would have heard it.
    table.note_boot_address(MAC, "127.0.0.1")
    return BootState(table=table, installer=Installer(str(files["kernel"]), str(files["initrd"]), CMDLINE), ipxe_dir=str(files["ipxe"]),
                     authorized_key=DEPLOYER_KEY, events=EventLog(str(files["run"]), table), base_urls=list(base_urls),
                     controller_secret=SECRET, published={"http_url": base_urls[0]})


def report(key, macs=(MAC,), ip="127.0.0.1"):
    return {
        "macs": list(macs), "ip": ip, "ssh_host_keys": [key],
        "disks": [{"name": "vda", "size_bytes": 8589934592, "model": "QEMU HARDDISK", "has_partitions": False,
                   "has_filesystem": False}],
        "os_release": {"ID": "nixos", "VARIANT_ID": "installer"},
    }


HARDWARE = {"cpu": {"model": "AMD EPYC", "cores": 2, "threads": 2}, "memory_bytes": 25275990016,
            "dmi": {"vendor": "QEMU", "product": "Standard PC (Q35 + ICH9, 2009)", "serial": None},
            "nics": [{"name": "eth0", "mac": "52:54:00:AA:00:01", "link": True, "speed_mbps": None, "driver": "virtio_net"}]}


def test_the_hardware_report_is_kept_with_unknowns_as_null(files, tmp_path):
    state = make_state(files)
    key = ssh_public_key(tmp_path)
    # What a machine without DMI and a disk that names nothing sends: blank strings, nulls.
    body = dict(report(key), hardware=dict(HARDWARE, dmi={"vendor": " ", "product": None, "serial": None}))
    body["disks"] = [dict(body["disks"][0], serial="QM00001 ", wwn=None, rotational=False)]

    async def scenario(client):
        script = await (await client.get("/boot/52-54-00-aa-00-01.ipxe")).text()
        answer = await client.post("/api/v1/phone-home", json=body, headers={"Authorization": "Bearer " + script_values(script)["token"]})
        assert answer.status == 200, await answer.text()

    run_with_client(state, scenario)
    kept = state.table.entry(MAC)["report"]
    assert kept["hardware"] == dict(HARDWARE, dmi={"vendor": None, "product": None, "serial": None},
                                    nics=[dict(HARDWARE["nics"][0], mac="52:54:00:aa:00:01")])
    assert (kept["disks"][0]["serial"], kept["disks"][0]["wwn"], kept["disks"][0]["rotational"]) == ("QM00001", None, False)


def path_of(url):
    return "/" + url.split("/", 3)[3]


# -- in process, aiohttp's test client ----------------------------------------------------------------

def run_with_client(state, scenario, requests=None):
    async def main():
        async with TestClient(TestServer(make_app(state, requests), host="127.0.0.1")) as client:
            return await scenario(client)
    return asyncio.run(main())


def test_script_kernel_initrd_and_phone_home_in_process(files, tmp_path):
    state = make_state(files)
    key = ssh_public_key(tmp_path)

    async def scenario(client):
        answer = await client.get("/boot/52-54-00-AA-00-01.ipxe")
        assert answer.status == 200
        script = await answer.text()
        assert script.startswith("#!ipxe\n") and CMDLINE in script
        values = script_values(script)
        assert values["api"] == "http://127.0.0.1:8080/api/v1"
        assert values["retry"] == "http://127.0.0.1:8080/boot/52-54-00-aa-00-01.ipxe"
        kernel = await client.get(path_of(values["kernel"]))
        assert kernel.status == 200 and await kernel.read() == files["kernel"].read_bytes()
        initrd = await client.head(path_of(values["initrd"]))
        assert int(initrd.headers["Content-Length"]) == files["initrd"].stat().st_size
        auth = {"Authorization": "Bearer " + values["token"]}
        answer = await client.post("/api/v1/phone-home", json=report(key), headers=auth)
        assert answer.status == 200
        assert await answer.json() == {"authorized_keys": DEPLOYER_KEY}
        snapshot = await (await client.get("/api/v1/events", headers=ADMIN)).json()
        published = await (await client.get("/api/v1/state", headers=ADMIN)).json()
        awaiting = await (await client.get("/api/v1/awaiting-phone-home", headers=ADMIN)).json()
        return snapshot, await (await client.get("/api/v1/hosts/52-54-00-aa-00-01", headers=ADMIN)).json(), published, awaiting

    snapshot, host, published, awaiting = run_with_client(state, scenario)
    assert published == {"http_url": "http://127.0.0.1:8080"}
    assert awaiting == {"awaiting_phone_home": []}, "the phone-home claimed the token"
    entry = snapshot["hosts"][MAC]
    assert entry["host"] == "nixie-01" and entry["last_event"]["step"] == "phone_home" and entry["token"] == "claimed"
    assert entry["report"]["ssh_host_keys"] == [key] and entry["report"]["source_ip"] == "127.0.0.1"
    # An agent that reports no disk links (an earlier release's) gets empty lists: a layout naming a link finds no disk.
    # and no serial, WWN, rotational or hardware: all unknown.
    assert entry["report"]["disks"] == [dict(report(key)["disks"][0], by_id=[], by_path=[], serial=None, wwn=None, rotational=None)]
    assert entry["report"]["hardware"] is None
    assert host == entry
    with open(state.events.path, encoding="utf-8") as handle:
        events = [json.loads(line) for line in handle]
    assert [event["step"] for event in events] == ["script", "kernel", "file_sent", "initrd", "file_sent", "phone_home"]
    kernel_sent, initrd_sent = events[2], events[4]
    assert (kernel_sent["kind"], kernel_sent["bytes"], kernel_sent["complete"]) == ("kernel", files["kernel"].stat().st_size, True)
    assert (initrd_sent["kind"], initrd_sent["bytes"]) == ("initrd", 0), "a HEAD sends no body"
    assert events[3]["size"] == files["initrd"].stat().st_size


def test_x86_and_arm64_hosts_of_one_run_each_get_their_own_systems_installer(files, tmp_path):
    arm = {"kernel": tmp_path / "Image", "initrd": tmp_path / "initrd-arm64"}
    arm["kernel"].write_bytes(os.urandom(2 * 1024 * 1024 + 5))
    arm["initrd"].write_bytes(os.urandom(1024 * 1024 + 1))
    arm_mac, arm_cmdline = "52:54:00:aa:00:03", "init=/nix/store/aarch64-installer/init console=ttyAMA0"
    table = HostTable([Host("nixie-01", MAC), Host("nixie-03", arm_mac, system="aarch64-linux")])
    table.note_boot_address(MAC, "127.0.0.1")
    table.note_boot_address(arm_mac, "127.0.0.1")
    state = BootState(table=table, installer=Installer(str(files["kernel"]), str(files["initrd"]), CMDLINE), ipxe_dir=str(files["ipxe"]),
                      installers={"aarch64-linux": Installer(str(arm["kernel"]), str(arm["initrd"]), arm_cmdline, "aarch64-linux")},
                      authorized_key=DEPLOYER_KEY, events=EventLog(str(files["run"]), table), base_urls=["http://127.0.0.1:8080"],
                      controller_secret=SECRET)

    async def scenario(client):
        served = {}
        for mac in (MAC, arm_mac):
            script = await (await client.get("/boot/%s.ipxe" % mac.replace(":", "-"))).text()
            values = script_values(script)
            served[mac] = (script, await (await client.get(path_of(values["kernel"]))).read(),
                           await (await client.get(path_of(values["initrd"]))).read())
        return served

    served = run_with_client(state, scenario)
    assert CMDLINE in served[MAC][0] and arm_cmdline not in served[MAC][0]
    assert served[MAC][1:] == (files["kernel"].read_bytes(), files["initrd"].read_bytes())
    assert arm_cmdline in served[arm_mac][0] and CMDLINE not in served[arm_mac][0]
    assert served[arm_mac][1:] == (arm["kernel"].read_bytes(), arm["initrd"].read_bytes())


def test_a_client_past_its_request_budget_gets_429_and_the_controller_none(files):
    state = make_state(files)

    async def scenario(client):
        statuses = [(await client.get("/boot/52-54-00-aa-00-99.ipxe")).status for dummy in range(8)]
        assert statuses == [404] * 5 + [429] * 3
        # The controller shares the client's address here and still gets through: its secret, not its address, counts.
        assert (await client.get(contract.STATE_ROUTE, headers=ADMIN)).status == 200
        assert (await client.get(contract.STATE_ROUTE)).status == 429

    run_with_client(state, scenario, Budget(5, 60.0))
    with open(state.events.path, encoding="utf-8") as handle:
        refusals = [event for event in map(json.loads, handle) if event.get("status") == 429]
    assert refusals and refusals[0]["reason"] == "more than 5 requests in 60 s"


def test_installed_host_gets_local_boot_and_no_token(files):
    state = make_state(files)

    async def scenario(client):
        answer = await client.get("/boot/52-54-00-aa-00-02.ipxe")
        return answer.status, await answer.text()

    status, script = run_with_client(state, scenario)
    assert status == 200 and "\nsanboot --no-describe --drive 0 ||\n" in script and "nixie.token" not in script
    assert "imgfetch --name local-boot-failed http://127.0.0.1:8080/boot/52-54-00-aa-00-02/local-boot-failed ||" in script
    assert state.table.entry(INSTALLED_MAC)["last_event"]["step"] == "boot_local"


@pytest.mark.parametrize("body, field", [
    ({"macs": "52:54:00:aa:00:01"}, "macs"),
    ({"macs": ["not-a-mac"]}, "macs[0]"),
    ({"ip": "300.1.1.1"}, "ip"),
    ({"ip": 17}, "ip"),
    ({"ssh_host_keys": ["ssh-ed25519 !!!notbase64"]}, "ssh_host_keys[0]"),
    ({"ssh_host_keys": ["ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIJ7n8yY9tDm3rPsn0pO3m2b3QH7O0Y1pFq3u1cJ3B0Zx"]}, "ssh_host_keys[0]"),
    ({"ssh_host_keys": ["ssh-ed25519 AAAA x\nssh-ed25519 AAAA y"]}, "ssh_host_keys[0]"),
    ({"disks": [{"name": "vda", "size_bytes": "8G", "model": "", "has_partitions": False, "has_filesystem": False}]},
     "disks[0].size_bytes"),
    ({"disks": [{"name": "vda", "size_bytes": True, "model": "", "has_partitions": False, "has_filesystem": False}]},
     "disks[0].size_bytes"),
    ({"disks": [{"name": "../sda", "size_bytes": 1, "model": "", "has_partitions": False, "has_filesystem": False}]},
     "disks[0].name"),
    ({"disks": [{"name": "vda", "size_bytes": 1, "model": "", "has_partitions": "no", "has_filesystem": False}]},
     "disks[0].has_partitions"),
    ({"disks": [dict(report("")["disks"][0], by_id="ata-X")]}, "disks[0].by_id"),
    ({"disks": [dict(report("")["disks"][0], by_id=["ata-X", "../../sda"])]}, "disks[0].by_id[1]"),
    ({"disks": [dict(report("")["disks"][0], by_path=["pci-0000:00:04.0", 7])]}, "disks[0].by_path[1]"),
    ({"disks": [dict(report("")["disks"][0], by_path=["x"] * 65)]}, "disks[0].by_path"),
    ({"os_release": ["ID=nixos"]}, "os_release"),
    ({"os_release": {"ID": 1}}, "os_release.ID"),
    ({"disks": [dict(report("")["disks"][0], rotational="yes")]}, "disks[0].rotational"),
    ({"disks": [dict(report("")["disks"][0], serial="a\nb")]}, "disks[0].serial"),
    ({"hardware": []}, "hardware"),
    ({"hardware": dict(HARDWARE, cpu=None)}, "hardware.cpu"),
    ({"hardware": dict(HARDWARE, cpu={"model": None, "cores": -1, "threads": 1})}, "hardware.cpu.cores"),
    ({"hardware": dict(HARDWARE, memory_bytes="1G")}, "hardware.memory_bytes"),
    ({"hardware": dict(HARDWARE, dmi={"vendor": 5})}, "hardware.dmi.vendor"),
    ({"hardware": dict(HARDWARE, nics=[dict(HARDWARE["nics"][0], mac="52:54:00:zz:00:01")])}, "hardware.nics[0].mac"),
    ({"hardware": dict(HARDWARE, nics=[dict(HARDWARE["nics"][0], name="../eth0")])}, "hardware.nics[0].name"),
    ({"hardware": dict(HARDWARE, nics=[dict(HARDWARE["nics"][0], link=1)])}, "hardware.nics[0].link"),
])
def test_bad_report_field_is_named(files, tmp_path, body, field):
    state = make_state(files)
    key = ssh_public_key(tmp_path)

    async def scenario(client):
        script = await (await client.get("/boot/52-54-00-aa-00-01.ipxe")).text()
        auth = {"Authorization": "Bearer " + script_values(script)["token"]}
        answer = await client.post("/api/v1/phone-home", json=dict(report(key), **body), headers=auth)
        return answer.status, await answer.json()

    status, answer = run_with_client(state, scenario)
    assert status == 400
    assert answer["error"].startswith(field + ":")


@pytest.mark.parametrize("base, configurator", [("http://[fd5e:213::1]:8080", "ipv6"), ("http://127.0.0.1:8080", "dhcp")])
def test_autoexec_beside_the_ipxe_binaries_chains_the_script_of_the_boot_nic(files, base, configurator):
    state = make_state(files, base_urls=(base,))

    async def scenario(client):
        answer = await client.get("/ipxe/autoexec.ipxe")
        assert answer.status == 200
        # Anywhere else it is no file of ours: iPXE asks beside its own URL, and the allow-list stays closed.
        assert (await client.get("/autoexec.ipxe")).status == 404
        assert (await client.get("/boot/autoexec.ipxe")).status == 404
        return await answer.text()

    commands = [line.split(" || ")[0] for line in run_with_client(state, scenario).splitlines()]
    assert "ifconf --configurator %s" % configurator in commands
    assert "chain --replace %s/boot/${netX/mac:hexhyp}.ipxe" % base in commands
    with open(state.events.path, encoding="utf-8") as handle:
        assert [json.loads(line)["step"] for line in handle] == ["autoexec", "refused", "refused"]


def test_mark_installed_then_released_ends_the_server(files):
    state = make_state(files)
    released = []
    state.on_all_released = lambda: released.append(True)

    async def scenario(client):
        marked = await client.post("/api/v1/hosts/%s/installed" % MAC, json={"installed": True}, headers=ADMIN)
        assert marked.status == 200 and (await marked.json())["installed"] is True
        script = await client.get("/boot/52-54-00-aa-00-01.ipxe")
        assert "kernel " not in await script.text(), "an installed host boots its disk"
        unmarked = await client.post("/api/v1/hosts/%s/installed" % MAC, json={"installed": False}, headers=ADMIN)
        assert unmarked.status == 200
        assert "kernel " in await (await client.get("/boot/52-54-00-aa-00-01.ipxe")).text()
        assert (await client.post("/api/v1/hosts/%s/installed" % MAC, json={"installed": "yes"}, headers=ADMIN)).status == 400
        assert (await client.post("/api/v1/hosts/52:54:00:ff:ff:ff/released", headers=ADMIN)).status == 404
        # Only nixie-01 was not installed at start: releasing it leaves nothing to serve.
        answer = await client.post("/api/v1/hosts/%s/released" % MAC, headers=ADMIN)
        assert answer.status == 200 and (await answer.json())["remaining"] == []

    run_with_client(state, scenario)
    assert released == [True]
    steps = [json.loads(line)["step"] for line in (files["run"] / "events.jsonl").read_text().splitlines()]
    assert steps.count("marked_installed") == 1 and "marked_not_installed" in steps and steps[-1] == "released"


def test_a_hosts_progress_is_answered_at_its_next_event(files):
    state = make_state(files)
    url = "/api/v1/hosts/52-54-00-aa-00-01"

    async def timed(client, **params):
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await client.get(url, params=params, headers=ADMIN)
        return answer.status, (await answer.json() if answer.status == 200 else None), loop.time() - started

    async def scenario(client):
        loop = asyncio.get_running_loop()
        # TFTP records its events from its own thread: such an event ends the wait as well.
        loop.call_later(0.3, lambda: threading.Thread(target=state.events.record, args=(MAC, "tftp_start")).start())
        status, entry, took = await timed(client, wait="20")
        assert status == 200 and entry["last_event"]["step"] == "tftp_start" and 0.3 <= took < 5, (entry, took)
        since = repr(entry["last_event"]["ts"])

        status, same, took = await timed(client, wait="0.5", since=since)
        assert same["last_event"] == entry["last_event"] and 0.5 <= took < 5, "no newer event: the wait runs out"

        loop.call_later(0.2, state.events.record, MAC, "script")
        status, entry, took = await timed(client, wait="20", since=since)
        assert entry["last_event"]["step"] == "script" and took < 5
        status, entry, took = await timed(client, wait="20", since=since)
        assert entry["last_event"]["step"] == "script" and took < 0.5, "an event newer than since is answered at once"

        for bad in ({"wait": "nan"}, {"wait": "-1"}, {"wait": "1", "since": "x"}):
            assert (await timed(client, **bad))[0] == 400, bad
        assert (await client.get("/api/v1/hosts/52-54-00-ff-ff-ff", params={"wait": "20"}, headers=ADMIN)).status == 404

    run_with_client(state, scenario)


def test_non_json_body_is_400_but_only_with_a_valid_token(files):
    state = make_state(files)

    async def scenario(client):
        script = await (await client.get("/boot/52-54-00-aa-00-01.ipxe")).text()
        auth = {"Authorization": "Bearer " + script_values(script)["token"]}
        good = await client.post("/api/v1/phone-home", data=b"{not json", headers=auth)
        forged = await client.post("/api/v1/phone-home", data=b"{not json", headers={"Authorization": "Bearer " + "A" * 43})
        return good.status, forged.status, await forged.read()

    assert run_with_client(state, scenario) == (400, 403, b"")


# -- a real server on loopback, driven by curl ---------------------------------------------------------

class ServerThread:
    """The app on a real socket, its event loop in a thread, so tests can run curl synchronously."""

    def __init__(self, state, host="127.0.0.1", **limits):
        self.state = state
        self.limits = limits
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(host, started), daemon=True)
        self.thread.start()
        assert started.wait(10)

    def _run(self, host, started):
        asyncio.set_event_loop(self.loop)
        self.runner = self.loop.run_until_complete(start_http(make_app(self.state), host, 0, **self.limits))
        self.host, self.port = self.runner.addresses[0][:2]
        started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    @property
    def base(self):
        return "http://%s:%d" % (self.host, self.port)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server(files):
    state = make_state(files, base_urls=["http://127.0.0.2:0"])
    running = ServerThread(state, host="127.0.0.2")
    state.base_urls = [running.base]
    yield running
    running.stop()
    state.events.close()


def curl(*args, source="127.0.0.1"):
    """Run curl; return (status, headers text, body bytes)."""
    done = subprocess.run(["curl", "-sS", "--path-as-is", "--interface", source, "-D", "/dev/stderr", "-o", "-",
                           "-w", "\n%{http_code}", *args], capture_output=True, timeout=60, check=True)
    body, dummy, status = done.stdout.rpartition(b"\n")
    return int(status), done.stderr.decode("latin-1"), body


def header(headers, name):
    for line in headers.splitlines():
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return None


def fetch_script(server, mac="52-54-00-aa-00-01", source="127.0.0.1"):
    status, dummy, body = curl(server.base + "/boot/%s.ipxe" % mac, source=source)
    assert status == 200
    return script_values(body.decode())


def phone_home(server, token, body, source="127.0.0.1"):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    done = subprocess.run(["curl", "-sS", "--interface", source, "-o", "-", "-w", "\n%{http_code}",
                           "-H", "Authorization: Bearer " + token, "-H", "Content-Type: application/json",
                           "--data-binary", "@-", server.base + "/api/v1/phone-home"],
                          input=payload, capture_output=True, timeout=60, check=True)
    answer, dummy, status = done.stdout.rpartition(b"\n")
    return int(status), answer


def test_curl_script_per_mac_and_404_for_unknown(server):
    values = fetch_script(server)
    assert values["kernel"].startswith(server.base + "/files/52-54-00-aa-00-01/")
    assert values["api"] == server.base + "/api/v1"
    status, headers, body = curl(server.base + "/boot/52-54-00-aa-00-99.ipxe")
    assert (status, body) == (404, b"")
    assert header(headers, "Content-Length") == "0"


def test_curl_kernel_has_length_and_ranges(server, files):
    values = fetch_script(server)
    kernel = files["kernel"].read_bytes()
    status, headers, body = curl(values["kernel"])
    assert status == 200 and body == kernel
    assert int(header(headers, "Content-Length")) == len(kernel)
    assert header(headers, "Accept-Ranges") == "bytes"
    status, headers, body = curl("-r", "1000-1999", values["kernel"])
    assert status == 206 and body == kernel[1000:2000]
    assert header(headers, "Content-Range") == "bytes 1000-1999/%d" % len(kernel)
    status, dummy, body = curl("-r", "-100", values["initrd"])
    assert status == 206 and body == files["initrd"].read_bytes()[-100:]
    steps = [event["step"] for event in map(json.loads, open(server.state.events.path, encoding="utf-8"))]
    assert steps.count("kernel") == 2 and steps.count("initrd") == 1


def test_curl_files_need_a_valid_signature(server):
    values = fetch_script(server)
    base, dummy, kind = values["kernel"].rpartition("/")
    prefix, dummy, signature = base.rpartition("/")
    forged = "0" * 32 if signature != "0" * 32 else "1" * 32
    for url in (prefix + "/" + forged + "/kernel",                                  # forged signature
                prefix.replace("aa-00-01", "aa-00-02") + "/" + signature + "/kernel",  # another host's MAC
                base + "/bzImage", base + "/../initrd.bak"):
        status, dummy, body = curl(url)
        assert status == 404 and body == b"", url


def test_curl_ipxe_binary_over_http(server, files):
    status, headers, body = curl(server.base + "/ipxe/ipxe.efi")
    assert status == 200 and body == (files["ipxe"] / "ipxe.efi").read_bytes()
    assert int(header(headers, "Content-Length")) == 850528


def test_curl_phone_home_replay_forged_too_large(server, tmp_path):
    key = ssh_public_key(tmp_path)
    token = fetch_script(server)["token"]
    status, answer = phone_home(server, token, report(key))
    assert status == 200 and json.loads(answer) == {"authorized_keys": DEPLOYER_KEY}
    # The agent restarting on the same machine may report again.
    assert phone_home(server, token, report(key))[0] == 200
    # A forged token, a token for another MAC, a report whose address is not where it came from: bare 403.
    assert phone_home(server, "A" * 43, report(key)) == (403, b"")
    assert phone_home(server, token[:-2], report(key)) == (403, b"")
    assert phone_home(server, token, report(key, macs=["52:54:00:aa:00:99"])) == (403, b"")
    assert phone_home(server, token, report(key, ip="127.0.0.9")) == (403, b"")
    # A fresh script (the host rebooted into the installer) replaces the token.
    new_token = fetch_script(server)["token"]
    assert phone_home(server, token, report(key)) == (403, b"")
    oversized = json.dumps(dict(report(key), padding="x" * API_BODY_LIMIT)).encode()
    assert phone_home(server, new_token, oversized)[0] == 413
    status, answer = phone_home(server, new_token, dict(report(key), ip="not-an-ip"))
    assert status == 400 and json.loads(answer)["error"].startswith("ip:")
    refused = [e for e in map(json.loads, open(server.state.events.path, encoding="utf-8")) if e["step"] == "refused"]
    assert any(event["reason"] == "reported ip 127.0.0.9 is not the source address" for event in refused)


CONTROLLER_PATHS = ("/api/v1/events", "/api/v1/state", "/api/v1/awaiting-phone-home", "/api/v1/hosts/52-54-00-aa-00-01")
CONTROLLER_POSTS = ("/api/v1/hosts/52-54-00-aa-00-01/installed", "/api/v1/hosts/52-54-00-aa-00-01/released")


def test_controller_routes_need_the_runs_secret_from_any_address(server):
    # Loopback and the server's own address are no longer enough: a machine on the segment can spoof them.
    for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        for path in CONTROLLER_PATHS:
            for headers in ((), ("-H", "%s: %s" % (contract.CONTROLLER_SECRET_HEADER, SECRET[:-1] + "x")),
                            ("-H", "%s: %s" % (contract.CONTROLLER_SECRET_HEADER, SECRET + "x")),
                            ("-H", "%s: " % contract.CONTROLLER_SECRET_HEADER)):
                status, dummy, body = curl(*headers, server.base + path, source=source)
                assert (status, body) == (403, b""), (source, path, headers)
        # Nor may anyone without it tell the server a machine is installed, or release it.
        for path in CONTROLLER_POSTS:
            status, dummy, body = curl("-X", "POST", "--data", '{"installed": true}', server.base + path, source=source)
            assert (status, body) == (403, b""), path
    # With it, from anywhere: the controller may run on another host than the server.
    status, dummy, body = curl("-H", "%s: %s" % (contract.CONTROLLER_SECRET_HEADER, SECRET), server.base + "/api/v1/events",
                               source="127.0.0.3")
    assert status == 200 and MAC in json.loads(body)["hosts"]
    assert not server.state.table.get(MAC).installed and not server.state.table.entry(MAC)["released"]
    assert fetch_script(server)["kernel"], "the host must still boot the installer"
    with open(server.state.events.path, encoding="utf-8") as handle:
        assert SECRET not in handle.read(), "the secret is never recorded"


def test_the_client_presents_the_secret_and_says_what_is_missing_without_showing_it(server):
    assert MAC in BootServerClient(server.base, SECRET).events()
    assert BootServerClient(server.base, SECRET).host(MAC)["host"] == "nixie-01"
    for secret, said in ((None, "no controller secret"), ("wrong-" + SECRET, "a wrong controller secret")):
        with pytest.raises(BootServerUnavailable, match=said) as refused:
            BootServerClient(server.base, secret).events()
        assert "server_secret" in str(refused.value) and SECRET not in str(refused.value)


# -- the takeover of issue 12: another machine on the segment asks for a listed MAC's script -----------

def entry_of(server, mac=MAC):
    return BootServerClient(server.base, SECRET).host(mac)


def test_a_stranger_gets_no_token_cancels_none_and_cannot_take_the_phone_home(server, tmp_path):
    real_key, attacker_key = ssh_public_key(tmp_path, "real"), ssh_public_key(tmp_path, "attacker")
    token = fetch_script(server)["token"]
    # The attacker, 127.0.0.3, saw the MAC on the segment and asks for its script: no token, and the real one stands.
    status, dummy, body = curl(server.base + "/boot/52-54-00-aa-00-01.ipxe", source="127.0.0.3")
    assert (status, body) == (403, b"")
    assert entry_of(server)["last_event"]["reason"] == "127.0.0.3 took no part in the DHCP exchange of %s" % MAC
    # It phones home anyway, with a made-up ip and its own key: with a guessed token, or (sniffed) the real one.
    assert phone_home(server, "A" * 43, report(attacker_key, ip="10.9.9.9"), source="127.0.0.3") == (403, b"")
    assert phone_home(server, token, report(attacker_key, ip="10.9.9.9"), source="127.0.0.3") == (403, b"")
    assert entry_of(server)["token"] == "awaiting_phone_home" and entry_of(server)["report"] is None
    # The real installer is still accepted, and its report is the one the controller gets.
    status, answer = phone_home(server, token, report(real_key))
    assert status == 200 and json.loads(answer) == {"authorized_keys": DEPLOYER_KEY}
    entry = entry_of(server)
    assert entry["report"]["ssh_host_keys"] == [real_key] and entry["report"]["ip"] == "127.0.0.1" and entry["conflict"] is None
    # The stranger's fetch again changes nothing either.
    assert curl(server.base + "/boot/52-54-00-aa-00-01.ipxe", source="127.0.0.3")[0] == 403
    assert phone_home(server, token, report(real_key))[0] == 200


def test_only_an_installed_hosts_own_machine_can_say_its_ipxe_cannot_boot_the_disk(server):
    installed, pending = "52-54-00-aa-00-02", "52-54-00-aa-00-01"
    server.state.table.note_boot_address(INSTALLED_MAC, "127.0.0.4")
    status, dummy, body = curl(server.base + "/boot/%s.ipxe" % installed, source="127.0.0.4")
    failure_url = server.base + "/boot/%s/local-boot-failed" % installed
    assert status == 200 and ("imgfetch --name local-boot-failed %s ||" % failure_url).encode() in body
    # A stranger cannot silence the host, nor a host that still has to be installed; an unknown MAC is not found.
    assert curl(failure_url, source="127.0.0.3")[0] == 403
    assert entry_of(server, INSTALLED_MAC)["last_event"]["reason"] == "127.0.0.3 took no part in the DHCP exchange of %s" % INSTALLED_MAC
    assert curl(server.base + "/boot/%s/local-boot-failed" % pending)[0] == 403
    assert curl(server.base + "/boot/52-54-00-aa-00-99/local-boot-failed")[0] == 404
    assert curl(server.base + "/boot/not-a-mac/local-boot-failed")[0] == 404
    assert not server.state.table.get(INSTALLED_MAC).local_boot_failed and not server.state.table.get(MAC).local_boot_failed

    status, dummy, body = curl(failure_url, source="127.0.0.4")
    assert (status, body) == (200, b"#!ipxe\n")
    assert server.state.table.get(INSTALLED_MAC).local_boot_failed
    event = entry_of(server, INSTALLED_MAC)["last_event"]
    assert (event["step"], event["ip"]) == ("local_boot_failed", "127.0.0.4")


def test_two_machines_answering_as_one_mac_fail_the_host_and_neither_becomes_the_target(server, tmp_path):
    real_key, attacker_key = ssh_public_key(tmp_path, "real"), ssh_public_key(tmp_path, "attacker")
    # The attacker also sent a DHCP request in the MAC's name, so its address counts as the host's too.
    server.state.table.note_boot_address(MAC, "127.0.0.3")
    replaced = fetch_script(server, source="127.0.0.3")["token"]
    mine = fetch_script(server)["token"]
    theirs = fetch_script(server, source="127.0.0.3")["token"]
    assert phone_home(server, replaced, report(attacker_key, ip="127.0.0.3"), source="127.0.0.3") == (403, b""), \
        "fetching again replaced the fetcher's own token"
    assert phone_home(server, mine, report(real_key))[0] == 200, "the stranger's fetches did not cancel the real token"
    assert phone_home(server, theirs, report(attacker_key, ip="127.0.0.3"), source="127.0.0.3") == (403, b"")
    entry = entry_of(server)
    assert entry["conflict"] == "two machines answered as %s: refusing both" % MAC and entry["report"] is None
    # Refusing both: neither phone-home, nor a new script, nor the install.
    assert phone_home(server, mine, report(real_key))[0] == 403
    assert curl(server.base + "/boot/52-54-00-aa-00-01.ipxe")[0] == 403
    with pytest.raises(HostRefused, match="two machines answered as %s: refusing both" % MAC):
        BootServerClient(server.base, SECRET).mark_installed(MAC, True)
    assert not server.state.table.get(MAC).installed
    assert BootServerClient(server.base, SECRET).mark_installed(MAC, False)["installed"] is False


TRAVERSALS = [
    "/ipxe/../../../../etc/passwd",
    "/ipxe/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/ipxe/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/ipxe/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/ipxe/..%5c..%5c..%5cetc%5cpasswd",
    "/ipxe/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/ipxe/%2fetc%2fpasswd",
    "/ipxe//etc/passwd",
    "/ipxe/passwd",
    "/ipxe/etc/passwd",
    "/ipxe/etc%2fpasswd",
    "/ipxe/secret.txt",
    "/ipxe/ipxe.efi%00",
    "/ipxe/secret.txt%00ipxe.efi",
    "/ipxe/./ipxe.efi/..",
    "/ipxe/ipxe.efi/..%2fsecret.txt",
    "/ipxe/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "/ipxe/%ef%bc%8e%ef%bc%8e%ef%bc%8fetc%ef%bc%8fpasswd",
    "/ipxe/%e2%80%a4%e2%80%a4/etc/passwd",
    "/ipxe/....//....//etc/passwd",
    "/ipxe/" + "A" * 4000,
    "/ipxe/" + "../" * 200 + "etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/boot/..%2f..%2f..%2fetc%2fpasswd",
    "/boot/52-54-00-aa-00-01.ipxe%00.txt",
    "/boot/..%2f52-54-00-aa-00-01.ipxe",
    "/files/../../../etc/passwd",
    "/files/52-54-00-aa-00-01/%2e%2e/%2e%2e/etc/passwd",
    "/files/52-54-00-aa-00-01/00000000000000000000000000000000/..%2f..%2fsecret.txt",
    "/api/v1/hosts/..%2f..%2f..%2fetc%2fpasswd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_curl_traversal_refused(server, path):
    status, dummy, body = curl(server.base + path)
    assert status in (400, 403, 404), (path, status)
    assert b"root:" not in body and b"NOT-FOR-CLIENTS" not in body


@pytest.mark.parametrize("raw_path", [
    b"/ipxe/ipxe.efi\x00/../../etc/passwd",
    b"/ipxe/..\\..\\..\\etc\\passwd",
    b"/ipxe/\xc0\xae\xc0\xae/etc/passwd",
    b"/ipxe/passwd\x00",
    b"../../etc/passwd",
])
def test_raw_request_traversal_refused(server, raw_path):
    """Bytes curl will not send: NUL, raw backslashes, invalid UTF-8, a path without a leading slash."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GET " + raw_path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 403, 404), (raw_path, answer[:200])
    assert b"root:" not in answer and b"NOT-FOR-CLIENTS" not in answer


# --- a hostile client: bounded connections, timeouts, one log line for a flood -------------------------------


def test_deeply_nested_json_with_a_valid_token_is_400(server):
    token = fetch_script(server)["token"]
    status, answer = phone_home(server, token, b"[" * 100000 + b"]" * 100000)
    assert status == 400 and b"error" in answer


def test_a_range_of_zero_bytes_is_416(server, files):
    kernel_url = fetch_script(server)["kernel"]
    status, dummy, dummy_body = curl("-H", "Range: bytes=-0", kernel_url)
    assert status == 416
    status, dummy, body = curl("-H", "Range: bytes=-3", kernel_url)
    assert status == 206 and len(body) == 3


def raw_connection(server, source="127.0.0.1"):
    sock = socket.create_connection((server.host, server.port), timeout=5, source_address=(source, 0))
    return sock


def closed_by_server(sock, within):
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.fixture
def capped_server(files):
    state = make_state(files, base_urls=["http://127.0.0.2:0"])
    running = ServerThread(state, host="127.0.0.2", per_client=4, total=6, idle_timeout=1.0)
    state.base_urls = [running.base]
    yield running
    running.stop()
    state.events.close()


def test_connections_are_capped_per_client_and_in_all_and_idle_ones_closed(capped_server):
    held = [raw_connection(capped_server) for dummy in range(4)]
    # Over the client's cap: reset at once, before aiohttp sees it.
    extra = raw_connection(capped_server)
    assert closed_by_server(extra, 0.5)
    # Another client still gets in, up to the total of 6.
    others = [raw_connection(capped_server, source="127.0.0.3") for dummy in range(2)]
    assert closed_by_server(raw_connection(capped_server, source="127.0.0.4"), 0.5)
    # Idle, or a request head sent a byte at a time: closed after the idle timeout (1 s here).
    held[0].sendall(b"GET /boot/52-54-00-aa-00-01.ipxe HTTP/1.1\r\nHost: x\r\n")
    assert all(closed_by_server(sock, 3.0) for sock in held + others)
    for sock in held + others + [extra]:
        sock.close()
    status, dummy, dummy_body = curl(capped_server.base + "/boot/52-54-00-aa-00-01.ipxe")
    assert status == 200


def test_a_body_sent_slowly_is_cut_off(capped_server, monkeypatch):
    monkeypatch.setattr(http_module, "HTTP_BODY_TIMEOUT", 1.0)
    sock = raw_connection(capped_server)
    sock.sendall(b"POST /api/v1/phone-home HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    sock.settimeout(3)
    assert sock.recv(1024).startswith(b"HTTP/1.1 408")
    sock.close()


def test_a_flood_of_malformed_requests_leaves_a_few_lines_without_tracebacks(server, caplog):
    with caplog.at_level(logging.WARNING):
        for dummy in range(200):
            sock = raw_connection(server)
            sock.sendall(b"GET /\x00bad HTTP/1.1\r\nHost: \x01\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(1024).split(b" ")[1] == b"400"
            sock.close()
    lines = [record for record in caplog.records if record.levelno >= logging.WARNING and record.name.startswith(http_module.__name__)]
    assert 1 <= len(lines) <= 5, [record.getMessage() for record in lines]
    assert all(record.exc_info is None and "127.0.0.1" in record.getMessage() for record in lines)
