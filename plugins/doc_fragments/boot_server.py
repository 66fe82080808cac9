# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """How a module finds the run's boot server: its URL, or the run directory of one on the controller."""

    DOCUMENTATION = r"""
options:
  server_url:
    description:
      - The boot server's URL (M(nixie.provision.server)'s C(http_url)); it may run on another host.
      - One of O(server_url) and O(run_dir) is required.
    type: str
  run_dir:
    description: Without O(server_url), the run directory of the boot server running on the controller.
    type: path
"""
