# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Child processes that must not outlive their deadline, nor leave their own children behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import IO, Mapping, NamedTuple, Sequence, Union

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

# What Popen takes for stdout and stderr: subprocess.PIPE (capture), subprocess.DEVNULL or STDOUT, or an open file.
Stream = Union[int, IO]

# How often a stopping group is checked for members that outlived its leader.
_GROUP_POLL = 0.05


class Finished(NamedTuple):
    """A command that exited before its deadline; ``stdout``/``stderr`` are text when captured (PIPE), else None."""

    returncode: int
    stdout: str | None
    stderr: str | None


class CommandNotStarted(NixieError):
    """The command could not be executed (not found, not executable); the OSError is ``__cause__``."""

    def __init__(self, argv: Sequence[str], error: OSError) -> None:
        super().__init__("cannot run %s: %s" % (argv[0], error.strerror or error))


class CommandTimeout(NixieError):
    """The command ran past its deadline and its process group was stopped; subprocess's TimeoutExpired is ``__cause__``."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        super().__init__("%s did not finish within %s s and was stopped" % (argv[0], timeout))


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` (0 only checks) to process group ``pgid``; False when no member is left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(process: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the process group ``process`` leads (started with ``start_new_session=True``), SIGKILL what is left after ``grace`` s.

    The group counts as stopped once every member is gone, not only its leader: a child that ignores SIGTERM
    would otherwise outlive a leader that obeys it. ``grace`` 0 sends SIGKILL alone.
    """
    deadline = time.monotonic() + grace
    if grace > 0 and _signal_group(process.pid, signal.SIGTERM):
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        while time.monotonic() < deadline and _signal_group(process.pid, 0):
            time.sleep(_GROUP_POLL)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _text(output: bytes | None) -> str | None:
    return None if output is None else output.decode("utf-8", "replace")


def run_with_deadline(argv: Sequence[str], timeout: float | None, stdout: Stream = subprocess.PIPE, stderr: Stream = subprocess.PIPE,
                      grace: float = 10, env: Mapping[str, str] | None = None) -> Finished:
    """Run ``argv`` (stdin from /dev/null) for at most ``timeout`` s (None: no limit) and return how it finished.

    The command leads a process group of its own, so at the deadline :func:`stop_process_group` ends what it
    started too (an SSH ProxyCommand, nix builders, nixos-anywhere's ssh), with ``grace`` s between SIGTERM and
    SIGKILL. ``env``, if given, is the command's whole environment. Raises CommandNotStarted when ``argv`` cannot be
    executed and CommandTimeout at the deadline.
    """
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True, env=env)
    except OSError as exc:
        raise CommandNotStarted(argv, exc) from exc
    with process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            stop_process_group(process, grace)
            raise CommandTimeout(argv, timeout) from exc
    return Finished(process.returncode, _text(out), _text(err))
