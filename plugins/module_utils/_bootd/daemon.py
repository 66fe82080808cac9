# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the boot server as a detached daemon, and find it again from its run directory.

Ansible removes a module's unpacked payload as soon as the module returns, so the daemon is a fork of the
module process that already imported all of the collection code it needs (nothing is imported after the
fork). The module learns whether the start worked through a pipe: the daemon writes one line, either its
state once every socket is bound, or the error that stopped it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from typing import Any, Callable, Dict, Mapping, Optional

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import LOG_FILE, PID_FILE, STATE_FILE
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError


class DaemonError(NixieError):
    """The daemon did not start, or does not stop."""


def _write_line(fd, payload):
    os.write(fd, (json.dumps(payload) + "\n").encode())


def start_detached(run_dir: str, serve: Callable[[Callable[[Mapping[str, Any]], None]], None], timeout: float = 30.0) -> Dict[str, Any]:
    """Fork ``serve(ready)`` into a detached daemon and return its state once it is ready.

    ``serve`` runs in the daemon and must call ``ready(state)`` once it serves; its return ends the daemon,
    and an exception it raises (before ready) is reported to the caller as DaemonError.
    """
    os.makedirs(run_dir, exist_ok=True)
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:
        os.close(read_end)
        _become_daemon(run_dir, serve, write_end)
    os.close(write_end)
    os.waitpid(first, 0)
    try:
        line = _read_line(read_end, timeout)
    finally:
        os.close(read_end)
    if not line:
        raise DaemonError("the boot server exited during start-up without a word; see %s" % os.path.join(run_dir, LOG_FILE))
    message = json.loads(line)
    if "error" in message:
        raise DaemonError(message["error"], log=os.path.join(run_dir, LOG_FILE))
    return message["state"]


def _read_line(fd, timeout):
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise DaemonError("the boot server did not report ready within %s s" % timeout)
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode()


def _become_daemon(run_dir, serve, report_fd):
    """In the first child: detach twice (no controlling terminal, not a session leader), then serve."""
    try:
        os.setsid()
        if os.fork():
            os._exit(0)  # pylint: disable=protected-access
        os.chdir("/")
        log_fd = os.open(os.path.join(run_dir, LOG_FILE), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        # Ansible waits for the module's stdout and stderr to close: the daemon must hold neither.
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        with open(os.path.join(run_dir, PID_FILE), "w", encoding="utf-8") as handle:
            handle.write("%d %s\n" % (os.getpid(), _start_time(os.getpid())))

        def ready(state):
            state = dict(state, pid=os.getpid())
            with open(os.path.join(run_dir, STATE_FILE), "w", encoding="utf-8") as handle:
                json.dump(state, handle, indent=2, sort_keys=True)
            _write_line(report_fd, {"state": state})

        serve(ready)
        code = 0
    except Exception as exc:  # pylint: disable=broad-except
        # Whatever stops the server must reach the module that started it, not just the log.
        try:
            _write_line(report_fd, {"error": str(exc)})
        except OSError:
            pass
        code = 1
    finally:
        for name in (PID_FILE, STATE_FILE):
            try:
                os.unlink(os.path.join(run_dir, name))
            except OSError:
                pass
    os._exit(code)  # pylint: disable=protected-access


def _stat_fields(pid):
    with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
        # The command name in parentheses may hold spaces; the fields after it are plain.
        return handle.read().rsplit(")", 1)[1].split()


def _start_time(pid):
    return _stat_fields(pid)[19]


def running_pid(run_dir: str) -> Optional[int]:
    """Return the pid of the daemon serving ``run_dir``, or None when none runs.

    The pid file also records the process start time, so a pid reused by another process after a crash
    is not mistaken for the daemon.
    """
    try:
        with open(os.path.join(run_dir, PID_FILE), encoding="utf-8") as handle:
            pid_text, started = handle.read().split()
        pid = int(pid_text)
        return pid if _alive(pid) and _start_time(pid) == started else None
    except (OSError, ValueError, IndexError):
        return None


def read_state(run_dir: str) -> Optional[Dict[str, Any]]:
    """Return the state the running daemon published, or None."""
    if running_pid(run_dir) is None:
        return None
    try:
        with open(os.path.join(run_dir, STATE_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def stop(run_dir: str, timeout: float = 10.0) -> bool:
    """Stop the daemon serving ``run_dir``; return True when one was running."""
    pid = running_pid(run_dir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(pid):
        if time.monotonic() > deadline:
            raise DaemonError("boot server pid %d survived SIGKILL" % pid)
        time.sleep(0.05)
    return True


def _alive(pid):
    try:
        # A zombie has exited; only its parent's wait is missing.
        return _stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False
