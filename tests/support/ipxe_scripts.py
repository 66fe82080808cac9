# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a served iPXE installer script the way iPXE and the installer's agent do: its URLs and kernel parameters."""

from __future__ import annotations


def script_values(script):
    """``kernel``, ``initrd`` and ``retry`` URLs and the ``token`` and ``api`` kernel parameters of an installer script."""
    commands = [line.split(" || ")[0] for line in script.splitlines()]
    words = next(command for command in commands if command.startswith("kernel ")).split()
    values = dict(word.split("=", 1) for word in words[2:] if "=" in word)
    initrd_url = next(command for command in commands if command.startswith("initrd ")).split()[-1]
    retry_url = next(command for command in commands if command.startswith("chain ")).split()[-1]
    return {"kernel": words[1], "initrd": initrd_url, "token": values["nixie.token"], "api": values["nixie.api"],
            "retry": retry_url}
