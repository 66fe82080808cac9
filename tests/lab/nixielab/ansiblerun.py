"""Run the collection's modules the way Ansible users do: `ansible localhost -m ...`, optionally in a namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from .processes import in_netns


def run_module(module: str, args: dict, *, netns: str | None = None, check: bool = False, wrapper: tuple[str, ...] = (),
               timeout: float = 300) -> dict:
    """Run `module` with `args` on localhost and return its result, with `failed` set from Ansible's verdict."""
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0", ANSIBLE_NOCOLOR="1")
    argv = [*wrapper, shutil.which("ansible") or "ansible", "localhost", "--one-line", "-m", module, "-a", json.dumps(args)]
    if check:
        argv.append("--check")
    if netns:
        argv = in_netns(netns, argv)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if "=>" not in done.stdout:
        raise AssertionError("ansible printed no result (exit %d): %s %s" % (done.returncode, done.stdout, done.stderr))
    # --one-line prints "localhost | STATUS => {result as JSON}", where a failure's STATUS is "FAILED!".
    status, result = done.stdout.split("=>", 1)
    return dict(json.loads(result), failed="FAILED!" in status)
