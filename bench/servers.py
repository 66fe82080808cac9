"""The servers under test, started in a Side's controller namespace with the same files.

Nixie: its boot server (ProxyDHCP, TFTP, HTTP in one process) through ``server.start``.
Reference: what a user would otherwise set up: dnsmasq in proxy-DHCP mode with its TFTP server, and nginx
(``worker_processes auto``, sendfile) serving the same iPXE binaries, kernel and initrd, one static iPXE script
for every machine, and a phone-home endpoint that answers 200 without checking any token.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import api_url, base_url
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.events import read_events
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.ipxe import installer_script
from nixielab.processes import REPO_ROOT, in_netns, python_environment

from .lab import HTTP_PORT, SERVER_IP

BASE = base_url(SERVER_IP, HTTP_PORT)
# The reference's scripts carry a token of the agent's format that nginx never checks.
REFERENCE_TOKEN = "bench-reference-token-0000000000"
AUTHORIZED_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHN0YW5kLWluLWtleS1mb3ItdGhlLWJlbmNobWFyaw bench"


def _wait_for(predicate, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("%s did not happen within %.0f s" % (what, timeout))
        time.sleep(0.05)


class NixieServer:
    """Nixie's boot server for ``macs`` in ``side``'s controller namespace; ``pids`` for the meters."""

    def __init__(self, side, workdir, macs, files):
        self.side = side
        self.run_dir = Path(workdir) / "nixie-run"
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.config = {
            "run_dir": str(self.run_dir), "interface": side.lab.ctl_if, "address": SERVER_IP, "http_port": HTTP_PORT,
            "hosts": [{"name": "m%d" % index, "mac": mac, "installed": False} for index, mac in enumerate(macs)],
            "kernel": str(files.kernel), "initrd": str(files.initrd), "cmdline": files.cmdline,
            "ipxe_dir": str(files.ipxe_dir), "authorized_key": AUTHORIZED_KEY,
        }
        self.state = None

    @property
    def pids(self):
        return [self.state["pid"]]

    def _run(self, *args):
        argv = in_netns(self.side.lab.ctl_ns, ["python", "-m", "bench.nixied", *args])
        environment = python_environment()
        environment["PYTHONPATH"] += ":%s" % REPO_ROOT
        return subprocess.run(argv, capture_output=True, text=True, check=True, env=environment, timeout=60)

    def __enter__(self):
        self.run_dir.mkdir(parents=True)
        config_file = self.run_dir.parent / "nixie-config.json"
        config_file.write_text(json.dumps(self.config), encoding="utf-8")
        self.state = json.loads(self._run("start", str(config_file)).stdout)
        return self

    def __exit__(self, *exc_info):
        self._run("stop", str(self.run_dir))

    def events(self, step=None):
        return [event for event in read_events(str(self.run_dir)) if step is None or event["step"] == step]


class ReferenceServer:
    """dnsmasq (proxy DHCP for ``macs`` only, TFTP) and nginx in ``side``'s controller namespace."""

    def __init__(self, side, workdir, macs, files):
        self.side = side
        self.dir = Path(workdir) / "reference"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.www = self.dir / "www"
        self.macs = list(macs)
        self.files = files
        self._processes = []

    @property
    def pids(self):
        return [process.pid for process in self._processes]

    def _write_files(self):
        (self.www / "api" / "v1").mkdir(parents=True)
        (self.dir / "tftp").mkdir()
        (self.dir / "nginx-temp").mkdir()
        for name in (contract.UNDIONLY_KPXE, contract.IPXE_EFI):
            (self.dir / "tftp" / name).symlink_to(Path(self.files.ipxe_dir, name).resolve())
        (self.www / "kernel").symlink_to(Path(self.files.kernel).resolve())
        (self.www / "initrd").symlink_to(Path(self.files.initrd).resolve())
        script = installer_script(BASE + "/boot.ipxe", BASE + "/kernel", BASE + "/initrd", self.files.cmdline, api_url(BASE), REFERENCE_TOKEN)
        (self.www / "boot.ipxe").write_text(script, encoding="ascii")
        (self.dir / "hosts").write_text("".join("%s,set:known\n" % mac for mac in self.macs), encoding="ascii")
        answer = json.dumps({contract.ANSWER_FIELD: AUTHORIZED_KEY})
        (self.dir / "nginx.conf").write_text(NGINX_CONF % {"dir": self.dir, "www": self.www, "listen": "%s:%d" % (SERVER_IP, HTTP_PORT),
                                                           "answer": answer, "phone_home": contract.PHONE_HOME_ROUTE}, encoding="ascii")

    def dnsmasq_argv(self):
        return [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--no-resolv", "--no-hosts",
            "--bind-interfaces", "--interface=%s" % self.side.lab.ctl_if, "--user=root",
            "--log-facility=%s" % (self.dir / "dnsmasq.log"), "--pid-file=%s" % (self.dir / "dnsmasq.pid"),
            # Proxy mode: the site's server gives addresses; answer only the run's machines, as Nixie does.
            "--dhcp-range=%s,proxy,255.255.255.0" % SERVER_IP, "--dhcp-hostsfile=%s" % (self.dir / "hosts"),
            "--dhcp-ignore=tag:!known",
            # The usual iPXE chainload: firmware gets the iPXE binary over TFTP, iPXE gets the script over HTTP,
            # told not to wait for further ProxyDHCP offers (option 175.176), as Nixie tells it.
            "--dhcp-userclass=set:ipxe,iPXE", "--dhcp-match=set:efi64,option:client-arch,7",
            "--dhcp-option=tag:ipxe,encap:175,176,1b",
            # In proxy mode dnsmasq names boot files only through a PXE menu (the client asks again on port
            # 4011); --dhcp-boot is not used there. The menu entries carry an HTTP URL for iPXE.
            "--pxe-service=tag:!ipxe,x86PC,iPXE,undionly.kpxe",
            "--pxe-service=tag:!ipxe,BC_EFI,iPXE,ipxe.efi", "--pxe-service=tag:!ipxe,X86-64_EFI,iPXE,ipxe.efi",
            "--pxe-service=tag:ipxe,x86PC,iPXE,%s/boot.ipxe" % BASE,
            "--pxe-service=tag:ipxe,BC_EFI,iPXE,%s/boot.ipxe" % BASE, "--pxe-service=tag:ipxe,X86-64_EFI,iPXE,%s/boot.ipxe" % BASE,
            # dnsmasq's default of 50 transfers at once leaves P5's later machines unanswered, and the transfers
            # their clients gave up on hold slots for dnsmasq's own timeout, so a whole later run of 125 got no TFTP
            # at all (measured); a user booting a fleet raises it.
            "--enable-tftp", "--tftp-root=%s" % (self.dir / "tftp"), "--tftp-max=1000",
        ]

    def __enter__(self):
        self._write_files()
        lab = self.side.lab
        self._processes.append(lab.popen_ctl(self.dnsmasq_argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self._processes.append(lab.popen_ctl(["nginx", "-c", str(self.dir / "nginx.conf"), "-g", "daemon off;"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_for(lambda: (self.dir / "nginx.pid").exists() and (self.dir / "dnsmasq.pid").exists(), "the reference's start")
        return self

    def __exit__(self, *exc_info):
        for process in self._processes:
            self.side.lab.tracker.stop(process)
        self._processes.clear()

    def access_log(self):
        """nginx's log as (unix time, client, method, path, status, bytes) tuples."""
        entries = []
        for line in (self.dir / "access.log").read_text(encoding="ascii", errors="replace").splitlines():
            stamp, client, method, path, status, size = line.split()
            entries.append((float(stamp), client, method, path, int(status), int(size)))
        return entries


NGINX_CONF = """
worker_processes auto;
user root;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log;
events { worker_connections 1024; }
http {
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path %(dir)s/nginx-temp;
    log_format bench '$msec $remote_addr $request_method $uri $status $body_bytes_sent';
    access_log %(dir)s/access.log bench;
    server {
        listen %(listen)s;
        root %(www)s;
        location = %(phone_home)s {
            default_type application/json;
            return 200 '%(answer)s';
        }
    }
}
"""
