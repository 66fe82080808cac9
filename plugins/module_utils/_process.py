# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Child processes that must not outlive their deadline, nor leave their own children behind."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(process, grace=10):
    """SIGTERM the process group ``process`` leads (started with ``start_new_session=True``), SIGKILL after ``grace`` s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
