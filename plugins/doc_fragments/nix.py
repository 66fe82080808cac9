# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """How a module runs ``nix`` (module_utils/_nix.Nix): the command, extra arguments for every call, and a deadline."""

    DOCUMENTATION = r"""
options:
  nix:
    description: The C(nix) command, a name looked up on E(PATH) and in the usual Nix profile directories, or a path.
    type: str
    default: nix
  extra_args:
    description:
      - Extra arguments for every C(nix) call, such as V([--option, sandbox, "false"]), V([--builders, ssh://builder])
        or V([--override-input, nixie, ../nixie]).
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds the evaluation and build may take together before C(nix) is stopped and the task fails.
    type: int
    default: 7200
"""
