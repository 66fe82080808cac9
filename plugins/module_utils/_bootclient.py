# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's one way to the boot server: its HTTP API, so the server may run on another host.

Modules and action plugins (status, install, release, wait_for_agent) go through ``BootServerClient`` and never
read the server's run directory themselves. The routes and their answers are ``_bootd.contract``'s.

Every call carries the run's controller secret (``contract.CONTROLLER_SECRET_HEADER``): for a server on this
machine ``connect`` takes it from the run directory through the server package, for one on another host the
caller passes it (the modules' no_log ``server_secret``). It goes in a header only, never into a message.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional
from urllib.parse import urlencode

from ansible.module_utils.urls import open_url

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract, daemon
from ansible_collections.nixie.provision.plugins.module_utils._bootd.runfiles import read_controller_secret
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._mac import normalize_mac

REQUEST_TIMEOUT = 10.0


class BootServerUnavailable(NixieError):
    """The boot server did not answer (stopped, killed, unreachable) or answered with an error."""


class HostNotServed(NixieError):
    """The boot server does not serve this MAC: it is not among the hosts it was started for."""


class HostRefused(NixieError):
    """The boot server refuses to go on with this host (two machines answered as it); the message says why."""


class BootServerClient:
    """Talks to the boot server at ``base_url`` (``http://10.0.0.2:8080``, the server module's ``http_url``).

    ``secret`` is the run's controller secret; without it every call is refused.
    """

    def __init__(self, base_url: str, secret: Optional[str], timeout: float = REQUEST_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._secret = secret

    def state(self) -> Dict[str, Any]:
        """What the server serves: address, port, URL, interface, iPXE binaries."""
        return self._call("GET", contract.STATE_ROUTE)

    def events(self) -> Dict[str, Dict[str, Any]]:
        """Every host's entry (see ``host``), by MAC."""
        return self._call("GET", contract.EVENTS_ROUTE)["hosts"]

    def awaiting_phone_home(self) -> List[str]:
        """The MACs holding an agent token that no phone-home has claimed yet."""
        return self._call("GET", contract.AWAITING_PHONE_HOME_ROUTE)["awaiting_phone_home"]

    def host(self, mac: str, wait: Optional[float] = None, since: Optional[float] = None) -> Dict[str, Any]:
        """The host's entry: ``host``, ``mac``, ``installed``, ``released``, ``token``, ``last_event``, ``report``.

        With ``wait``, the server holds the answer until the host has an event newer than ``since`` (the ``ts`` of
        the last event seen; None: any event), or ``wait`` seconds (at most ``contract.HOST_WAIT_LIMIT``) passed.
        """
        query = {}
        if wait is not None:
            query["wait"] = "%.3f" % wait
            if since is not None:
                query["since"] = repr(since)
        timeout = self.timeout + (wait or 0)
        return self._call("GET", self._host_route(mac), query=query, timeout=timeout, mac=mac)

    def mark_installed(self, mac: str, installed: bool) -> Dict[str, Any]:
        """From now on the host boots its disk (True) or the installer (False)."""
        return self._call("POST", self._host_route(mac, contract.HOST_INSTALLED_ROUTE), body={"installed": installed}, mac=mac)

    def release(self, mac: str) -> Dict[str, Any]:
        """The controller is done with the host; the answer's ``remaining`` names the hosts the server still serves."""
        return self._call("POST", self._host_route(mac, contract.HOST_RELEASED_ROUTE), body={}, mac=mac)

    def progress(self, mac: str, step: str, **fields: Any) -> Dict[str, Any]:
        """Tell the server what the controller is doing to the host (``contract.CONTROLLER_STEPS``), for its status page."""
        return self._call("POST", self._host_route(mac, contract.HOST_PROGRESS_ROUTE), body=dict(fields, step=step), mac=mac)

    @staticmethod
    def _host_route(mac: str, route: str = contract.HOST_ROUTE) -> str:
        return contract.host_route(normalize_mac(mac), route)

    def _call(self, method: str, route: str, query: Optional[Dict[str, str]] = None, body: Optional[Dict[str, Any]] = None,
              timeout: Optional[float] = None, mac: Optional[str] = None) -> Any:
        url = self.base_url + route + ("?" + urlencode(query) if query else "")
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self._secret:
            headers[contract.CONTROLLER_SECRET_HEADER] = self._secret
        try:
            with open_url(url, method=method, data=data, timeout=timeout or self.timeout, headers=headers) as response:
                return json.load(response)
        except Exception as exc:  # pylint: disable=broad-except
            # open_url raises urllib's errors, socket errors and Ansible's own; an HTTP error carries its status.
            code = getattr(exc, "code", None)
            if code == 404 and mac is not None:
                raise HostNotServed("the boot server at %s does not serve %s: it is not among the hosts it was started for"
                                    % (self.base_url, mac), url=url) from None
            if code == 409 and mac is not None:
                raise HostRefused(_error_of(exc) or "the boot server at %s refuses %s" % (self.base_url, mac), url=url) from None
            if code == 403:
                missing = "a wrong controller secret" if self._secret else "no controller secret"
                raise BootServerUnavailable(
                    "the boot server at %s refused %s %s: %s. Give run_dir on the server's machine, or server_secret (the "
                    "content of %s in its run directory)" % (self.base_url, method, route, missing, contract.CONTROLLER_SECRET_FILE),
                    url=url) from None
            raise BootServerUnavailable("the boot server at %s did not answer %s %s: %s" % (self.base_url, method, route, exc),
                                        url=url) from None


def _error_of(exc: Exception) -> Optional[str]:
    """The ``error`` of an HTTP error's JSON body, if it has one."""
    try:
        return json.loads(exc.read())["error"]
    except Exception:  # pylint: disable=broad-except
        return None


def connect(server_url: Optional[str] = None, run_dir: Optional[str] = None, secret: Optional[str] = None) -> Optional[BootServerClient]:
    """The client for ``server_url``, else for the boot server running on this machine for ``run_dir``; None if neither.

    Only a server started on this machine can be found by its run directory; one on another host needs its URL,
    and ``secret``, its controller secret. Without ``secret``, the one in ``run_dir`` is taken.
    """
    if run_dir and not secret:
        secret = read_controller_secret(run_dir)
    if server_url:
        return BootServerClient(server_url, secret)
    if run_dir:
        published = daemon.read_state(run_dir)
        if published is not None:
            return BootServerClient(published["http_url"], secret)
    return None
