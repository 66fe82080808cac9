# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Record when each task started and when the controller got its result, for the orchestration benchmark (bench P6)."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: bench_task_times
type: aggregate
short_description: Append each task's start and result (name, event, wall-clock time) to the file named by BENCH_TASK_TIMES
description:
  - Used by Nixie's benchmarks only.
  - One JSON line per event; C(event) is C(start), C(ok), C(failed) or C(skipped).
"""


def _record(task, event):
    path = os.environ.get("BENCH_TASK_TIMES")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"task": task, "event": event, "time": time.time()}) + "\n")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_task_times"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_task_start(self, task, is_conditional):
        # The name as results carry it (without the role prefix), so starts and results match.
        _record(str(task.name or "") or task.get_name(), "start")

    def v2_runner_on_ok(self, result):
        _record(result.task_name, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        _record(result.task_name, "failed")

    def v2_runner_on_skipped(self, result):
        _record(result.task_name, "skipped")
