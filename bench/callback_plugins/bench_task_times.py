# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Record when the controller got each task's result, for the orchestration benchmark (bench P6)."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: bench_task_times
type: aggregate
short_description: Append each finished task's name and wall-clock time to the file named by BENCH_TASK_TIMES
description:
  - Used by Nixie's benchmarks only.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_task_times"
    CALLBACK_NEEDS_ENABLED = True

    def v2_runner_on_ok(self, result):
        path = os.environ.get("BENCH_TASK_TIMES")
        if path:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"task": result.task_name, "time": time.time()}) + "\n")
