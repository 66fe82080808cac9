"""Processes the lab starts: where they run, how they are recorded, how they are stopped.

Every long-running process (dnsmasq, the power daemon, QEMU, tcpdump, anything started through
`popen_ctl`/`popen_lab`) is recorded as a small JSON file in a state directory under `.lab/`, so a
later `python -m nixielab teardown` can stop what a killed test run left behind. A record keeps the
process's start time as well as its PID, so a PID the kernel has since handed to an unrelated
process is never signalled.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_PARENT.parents[1]
STATE_ROOT = REPO_ROOT / ".lab"
NAMESPACE_PREFIX = "nxl-"
OWNER_FILE = "owner"  # no .json: records are the *.json files


class LabError(RuntimeError):
    """The lab could not be set up or driven; the message says what and why."""


def in_netns(netns: str, argv: list[str]) -> list[str]:
    """The argv that runs `argv` inside network namespace `netns`.

    `ip netns exec` execs the command after entering the namespace, so the PID of the resulting
    process is the command's own PID and can be tracked and signalled directly.
    """
    return ["ip", "netns", "exec", netns, *argv]


def nft_counted_packets(netns: str, family: str, table: str) -> int:
    """The packets the counters of nftables table `family` `table` in `netns` have counted so far, all rules together."""
    listing = run_checked(in_netns(netns, ["nft", "list", "table", family, table])).stdout
    return sum(int(count) for count in re.findall(r"counter packets (\d+)", listing))


def python_environment() -> dict[str, str]:
    """The environment for `python -m nixielab.<module>` children: this package importable whatever the caller's PYTHONPATH."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])))


def run_checked(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run `argv` and raise LabError with its stderr when it fails."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise LabError("%s failed (exit %d): %s" % (" ".join(argv), result.returncode, result.stderr.strip() or result.stdout.strip()))
    return result


def start_time(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot, or None when there is no such process or only its zombie."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses, so fields are counted from the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    state, started = fields[0], int(fields[19])  # fields 3 and 22 of proc(5)
    return None if state in ("Z", "X") else started


def wait_gone(pid: int, started: int, timeout: float) -> bool:
    """Wait until the process `pid` that started at `started` has exited; True if it did within `timeout`."""
    deadline = time.monotonic() + timeout
    while start_time(pid) == started:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_pid(pid: int, started: int, timeout: float = 5.0) -> None:
    """SIGTERM the process, then SIGKILL it if it has not exited after `timeout` seconds."""
    for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if start_time(pid) != started:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_gone(pid, started, grace):
            return
    raise LabError("process %d did not exit after SIGKILL" % pid)


class ProcessTracker:
    """Starts processes and records them under `directory`, one file per process.

    Several OS processes may share one directory: the power daemon records the QEMU machines it
    starts in the directory of the lab that started the daemon, so stopping the lab stops them too.
    The directory also names its owner (the process that created the lab), so that a teardown can
    tell processes left behind by a dead test run from those of a run still going on.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._children: dict[int, subprocess.Popen] = {}

    def claim(self) -> None:
        """Record the calling process as the owner, unless an owner is recorded already."""
        self.directory.mkdir(parents=True, exist_ok=True)
        owner = self.directory / OWNER_FILE
        if not owner.exists():
            owner.write_text("%d %s\n" % (os.getpid(), start_time(os.getpid())), encoding="ascii")

    def live_owner(self) -> int | None:
        """PID of the owner if it still runs, else None."""
        try:
            pid, started = (self.directory / OWNER_FILE).read_text(encoding="ascii").split()
        except (OSError, ValueError):
            return None
        return int(pid) if str(start_time(int(pid))) == started else None

    def spawn(self, label: str, argv: list[str], **popen_kwargs) -> subprocess.Popen:
        """Start `argv` (subprocess.Popen keyword arguments allowed) and record it under `label`."""
        self.claim()
        process = subprocess.Popen(argv, **popen_kwargs)  # pylint: disable=consider-using-with  # lives beyond this call
        started = start_time(process.pid)
        record = {"label": label, "pid": process.pid, "start_time": started, "argv": argv}
        self._record_path(process.pid).write_text(json.dumps(record), encoding="utf-8")
        self._children[process.pid] = process
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 5.0) -> int | None:
        """Stop a process this tracker spawned and forget it; returns its exit status."""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5.0)
        self.forget(process.pid)
        return process.returncode

    def forget(self, pid: int) -> None:
        """Drop the record of a process that has exited."""
        self._children.pop(pid, None)
        self._record_path(pid).unlink(missing_ok=True)

    def records(self) -> list[dict]:
        """All recorded processes that still run, newest first."""
        found = []
        for path in self.directory.glob("*.json"):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # written by a process killed mid-write, or removed meanwhile
            if record["start_time"] is not None and start_time(record["pid"]) == record["start_time"]:
                found.append(record)
            else:
                path.unlink(missing_ok=True)
        return sorted(found, key=lambda r: r["start_time"], reverse=True)

    def stop_all(self, timeout: float = 5.0) -> list[str]:
        """Stop every recorded process, newest first (machines before the daemon that started them); returns their labels."""
        stopped = []
        for record in self.records():
            child = self._children.get(record["pid"])
            if child is not None:
                self.stop(child, timeout)
            else:
                stop_pid(record["pid"], record["start_time"], timeout)
                self.forget(record["pid"])
            stopped.append("%s[%d]" % (record["label"], record["pid"]))
        return stopped

    def _record_path(self, pid: int) -> Path:
        return self.directory / ("%d.json" % pid)


def raise_on_termination_signals() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit so `with` blocks and atexit handlers clean up.

    Python's default for these signals is to die on the spot, which would leave namespaces and
    QEMU processes behind; Ctrl-C (SIGINT) already raises KeyboardInterrupt. A handler somebody
    else installed (pytest, a caller) is left alone.
    """
    def exit_on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; its own caller decides there
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, exit_on_signal)


def stop_namespace_processes(namespace: str) -> list[int]:
    """Stop every process still in network namespace `namespace`; return their PIDs.

    What the records cannot know: a daemon that detached itself (Nixie's boot server forks away from the
    module that started it), or anything of a lab killed mid-start. Left running, it would keep the namespace alive.
    """
    listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False).stdout.split()
    stopped = []
    for pid in map(int, listed):
        started = start_time(pid)
        if started is not None:
            stop_pid(pid, started)
            stopped.append(pid)
    return stopped


def text_so_far(path: Path) -> str:
    """What a process has written to ``path`` so far: "" before it created the file, undecodable bytes replaced."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def json_lines(path: Path) -> list[dict]:
    """The entries of a daemon's JSON-lines log so far, oldest first: none before it exists, and no line still being written."""
    return [json.loads(line) for line in text_so_far(path).splitlines() if line.endswith("}")]


def wait_for_entry(entries: Callable[[], list[dict]], predicate: Callable[[dict], bool], timeout: float, alive: Callable[[], None],
                   what: str) -> dict:
    """Wait for the first of `entries()` for which `predicate(entry)` is true; `alive()` raises LabError when the writer is gone."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in entries():
            if predicate(entry):
                return entry
        alive()
        if time.monotonic() > deadline:
            raise LabError("%s: nothing expected logged within %.0f s" % (what, timeout))
        time.sleep(0.1)


def daemon_config(argv: list[str] | None, module: str, description: str) -> dict:
    """The JSON config a lab daemon (`python -m nixielab.<module> --config FILE`) is started with; from here on
    SIGTERM and SIGHUP raise SystemExit, so that the daemon cleans up."""
    parser = argparse.ArgumentParser(prog="python -m nixielab.%s" % module, description=description.split("\n", maxsplit=1)[0])
    parser.add_argument("--config", required=True, type=Path, help="the JSON file the daemon's lab-side handle wrote")
    config = json.loads(parser.parse_args(argv).config.read_text(encoding="utf-8"))
    raise_on_termination_signals()
    return config
