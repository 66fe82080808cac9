# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of nixie.provision.wait_for_agent (documented in plugins/modules/wait_for_agent.py): the wait runs
in the worker when the controller is this machine, showing each boot step as it comes, and as the module on a
controller reached over SSH."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.utils.display import Display

from ansible_collections.nixie.provision.plugins.module_utils import _agent_wait
from ansible_collections.nixie.provision.plugins.plugin_utils._controller_action import ControllerAction

display = Display()


class ActionModule(ControllerAction):
    _VALID_ARGS = frozenset(_agent_wait.ARGUMENT_SPEC)
    MODULE_NAME = "nixie.provision.wait_for_agent"

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if self._task.check_mode:
            result.update(skipped=True, msg="check mode: no boot server runs to wait for")
            return result
        dummy, params = self.validate_argument_spec(argument_spec=_agent_wait.ARGUMENT_SPEC)
        task_vars = task_vars or {}
        # The host's own variables are the defaults; a module on another controller gets them as options.
        params["mac"] = params["mac"] or task_vars.get("nixie_mac")
        if not params["mac"]:
            raise AnsibleActionFail("mac: not given, and host %s has no nixie_mac variable" % task_vars.get("inventory_hostname"))
        params["name"] = params["name"] or task_vars.get("inventory_hostname")
        if params["known_addresses"] is None:
            params["known_addresses"] = [str(task_vars[name]) for name in ("nixie_ip", "nixie_wol_broadcast") if task_vars.get(name)]
        if not self._controller_is_here():
            result.update(self._run_on_controller({key: value for key, value in params.items() if value is not None}, task_vars))
            return result
        try:
            result.update(_agent_wait.wait_for_agent(params, display.display, display.warning))
        except _agent_wait.AgentWaitError as exc:
            raise AnsibleActionFail(str(exc)) from None
        return result
