# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """How a module finds the run's boot server: its URL, or the run directory of one on the controller.

    ``SECRET`` (``nixie.provision.boot_server.secret``): how it authenticates to it.
    """

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

    SECRET = r"""
options:
  server_secret:
    description:
      - The boot server's controller secret, which its controller API requires. It is the content of the file
        C(controller-secret) in the server's run directory (mode 0600), made anew at each start.
      - Not needed for a server running on this machine when O(run_dir) is given (the server's run directory), since
        it is read from there. For a server on another host, read it there without logging it, for example with
        M(ansible.builtin.slurp) and C(no_log), and pass it here.
      - Never shown in output or logs.
    type: str
"""
