# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The base of Nixie's action plugins that work on the host's controller (the task's delegated host)."""

from __future__ import annotations

from typing import Any, Dict, Mapping

from ansible.plugins.action import ActionBase


class ControllerAction(ActionBase):
    """An action whose work runs in Ansible's own worker when the controller is this machine, and as the action's
    module on the controller otherwise (a per-segment ``nixie_controller``, reached over SSH).

    In the worker, the work starts at once: a module's round trip (its payload built, copied and run in a fresh
    Python) costs about 0.4 s here, between a phone-home and nixos-anywhere. On another machine it must run there:
    the boot server, the run directory with its secret and the machines' segment are the controller's.
    """

    TRANSFERS_FILES = False
    _requires_connection = False
    # The module of the same name, run on a controller that is not this machine.
    MODULE_NAME = ""

    def _controller_is_here(self) -> bool:
        return self._connection.transport == "local"

    def _run_on_controller(self, module_args: Mapping[str, Any], task_vars: Mapping[str, Any]) -> Dict[str, Any]:
        try:
            return self._execute_module(module_name=self.MODULE_NAME, module_args=dict(module_args), task_vars=task_vars)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
