# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""run_with_deadline with real processes: exit codes, captured output, and whole process groups stopped at the deadline."""

from __future__ import annotations

import subprocess
import time

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._process import CommandNotStarted, CommandTimeout, Finished, run_with_deadline


def running(pid):
    """Whether ``pid`` still runs: an orphan's zombie waits for a reaper that may be slow to come, but has stopped."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def stops(pid_file):
    """Whether the process whose pid ``pid_file`` holds stops within a second: SIGKILL is delivered, not awaited."""
    pid = int(pid_file.read_text())
    for dummy in range(100):
        if not running(pid):
            return True
        time.sleep(0.01)
    return False


def test_exit_status_and_both_streams_are_returned():
    assert run_with_deadline(["sh", "-c", "echo out; echo err >&2; exit 3"], 5) == Finished(3, "out\n", "err\n")


def test_output_not_captured_is_none_and_goes_where_it_was_sent(tmp_path):
    log = tmp_path / "log"
    with open(log, "w", encoding="utf-8") as handle:
        done = run_with_deadline(["sh", "-c", "echo out; echo err >&2"], None, stdout=handle, stderr=subprocess.STDOUT)
    assert done == Finished(0, None, None)
    assert log.read_text(encoding="utf-8") == "out\nerr\n"


def test_undecodable_output_is_replaced_not_raised():
    assert run_with_deadline(["printf", "\\377ok"], 5).stdout == "\ufffdok"


def test_a_child_that_outlives_its_parent_is_stopped_at_the_deadline(tmp_path):
    pid_file = tmp_path / "pid"
    # The parent exits at once; the background sleep keeps stdout open, so only the deadline ends the wait.
    with pytest.raises(CommandTimeout) as raised:
        run_with_deadline(["sh", "-c", "sleep 60 & echo $! > %s; exit 0" % pid_file], 0.5)
    assert stops(pid_file)
    assert isinstance(raised.value, NixieError)
    assert str(raised.value) == "sh did not finish within 0.5 s and was stopped"
    # Callers that quote subprocess's own wording find it here.
    assert isinstance(raised.value.__cause__, subprocess.TimeoutExpired)


def test_a_child_ignoring_sigterm_is_killed_once_grace_is_over(tmp_path):
    pid_file = tmp_path / "pid"
    # The parent dies of the SIGTERM; the child, which ignores it, must not be left running.
    script = "(trap '' TERM; exec sleep 60) & echo $! > %s; wait" % pid_file
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        run_with_deadline(["sh", "-c", script], 0.5, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, grace=1)
    assert 1.5 <= time.monotonic() - started < 10
    assert stops(pid_file)


def test_without_grace_the_group_is_killed_at_once(tmp_path):
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        run_with_deadline(["sh", "-c", "trap '' TERM; sleep 60"], 0.2, grace=0)
    assert time.monotonic() - started < 5


def test_a_command_that_does_not_exist_is_not_started(tmp_path):
    missing = str(tmp_path / "no-such-command")
    with pytest.raises(CommandNotStarted) as raised:
        run_with_deadline([missing, "--help"], 5)
    assert str(raised.value) == "cannot run %s: No such file or directory" % missing
    assert isinstance(raised.value, NixieError) and isinstance(raised.value.__cause__, FileNotFoundError)
