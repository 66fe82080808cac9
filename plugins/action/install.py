# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of nixie.provision.install (documented in plugins/modules/install.py): the install runs in the
worker when the controller is this machine, and as the module on a controller reached over SSH."""

from __future__ import annotations

from ansible_collections.nixie.provision.plugins.module_utils import _install
from ansible_collections.nixie.provision.plugins.plugin_utils._controller_action import ControllerAction


class ActionModule(ControllerAction):
    _VALID_ARGS = frozenset(_install.ARGUMENT_SPEC)
    MODULE_NAME = "nixie.provision.install"

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        dummy, params = self.validate_argument_spec(argument_spec=_install.ARGUMENT_SPEC, required_together=_install.REQUIRED_TOGETHER,
                                                    required_one_of=_install.REQUIRED_ONE_OF)
        if self._controller_is_here():
            result.update(_install.install_host(params, self._task.check_mode))
        else:
            result.update(self._run_on_controller(self._task.args, task_vars))
        return result
