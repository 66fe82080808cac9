"""Run the collection's modules the way Ansible users do: `ansible localhost -m ...`, optionally in a namespace; or as
the module process alone, as a module runs on a controller that is not this machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

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


def run_module_process(module: str, args: dict, *, netns: str | None = None, timeout: float = 300) -> dict:
    """Run collection module `module` (nixie.provision.<name>) as its own Python process with `args`, as Ansible runs it
    on a delegated host that is not this machine (where an action plugin hands its work to the module), and return
    its result, with `failed` always set."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as arguments:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, arguments)
        arguments.flush()
        argv = [sys.executable, "-m", "ansible_collections.nixie.provision.plugins.modules.%s" % module.rsplit(".", 1)[1], arguments.name]
        done = subprocess.run(in_netns(netns, argv) if netns else argv, capture_output=True, text=True, timeout=timeout, check=False)
    try:
        result = json.loads(done.stdout)
    except ValueError:
        raise AssertionError("%s printed no result (exit %d): %s %s" % (module, done.returncode, done.stdout, done.stderr)) from None
    return dict(result, failed=bool(result.get("failed")))
