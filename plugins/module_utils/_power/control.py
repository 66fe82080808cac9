# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the power module does with a driver: decide, set the boot override, act, then wait for the BMC."""

from __future__ import annotations

import time
from typing import Callable

from ansible_collections.nixie.provision.plugins.module_utils._power.base import NO_OVERRIDE, PowerDriver, PowerTimeout

SETTLED = ("on", "off")
POLL_INTERVAL = 1.0


def power_action(state: str, current: str, can_reset: bool = True) -> str | None:
    """The power action that takes a machine reported as ``current`` to ``state``, or None for nothing.

    Cycling a machine that is off means switching it on, as a reset button would not. A state the driver
    cannot read (UNKNOWN) gets the action in any case, since nothing shows it is not needed. ``boot`` is
    "make it boot now": a cycle, or, where the driver cannot reset a machine (``can_reset`` false: Wake-on-LAN),
    switching it on.
    """
    if state == "status":
        return None
    if state == "boot":
        state = "cycle" if can_reset else "on"
    if state == "cycle":
        return "on" if current == "off" else "cycle"
    return None if current == state else state


def expected_state(action: str) -> str:
    """The power state the BMC reports once ``action`` has taken effect."""
    return "off" if action == "off" else "on"


def override_matches(pending: dict | None, request: dict) -> bool:
    """Whether the pending override already is ``request``, so that setting it again would change nothing.

    A request's mode or HTTP boot URI left as None means "whatever the BMC has".
    """
    if not pending or not pending["once"] or pending["device"] != request["device"]:
        return False
    return all(request[key] is None or pending[key] == request[key] for key in ("mode", "http_boot_uri"))


def wait_for_power(driver: PowerDriver, wanted: tuple[str, ...], deadline: float, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> str:
    """Poll the driver until it reports one of ``wanted`` and return it; PowerTimeout at ``deadline``.

    BMCs apply a change seconds after they accept it, and some report the old state until then.
    """
    while True:
        current = driver.power_state()
        if current in wanted:
            return current
        remaining = deadline - clock()
        if remaining <= 0:
            raise PowerTimeout("%s BMC %s still reports power %s, not %s, when the timeout ran out" % (
                driver.name, driver.address, current, " or ".join(wanted)), power_state_after=current)
        sleep(min(POLL_INTERVAL, remaining))


def run(driver: PowerDriver, state: str, boot_once: str | None = None, boot_mode: str | None = None,
        http_boot_uri: str | None = None, timeout: float = 60, check_mode: bool = False, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep) -> dict:
    """Take the machine to ``state`` (with a one-time boot from ``boot_once``) and describe what was done.

    In check mode it reads the BMC only and reports what it would do. A machine in a transitional state
    (``powering on``) is first awaited, because BMCs refuse or misread a reset in the middle of one.
    """
    deadline = clock() + timeout
    before = driver.power_state()
    if driver.reports_power and before not in SETTLED:
        before = wait_for_power(driver, SETTLED, deadline, clock, sleep)
    action = power_action(state, before, can_reset=driver.reports_power)
    command = driver.power_command(action) if action else None
    clearing = boot_once == NO_OVERRIDE
    request = driver.boot_request(boot_once, boot_mode, http_boot_uri) if boot_once and not clearing else None
    pending = driver.boot_override()
    set_boot = request is not None and not override_matches(pending, request)
    # An override that boots the disk from now on is where clearing ends on BMCs that cannot disable overrides.
    clear_boot = clearing and pending is not None and pending["device"] != "disk"
    actions = []
    if set_boot:
        actions.append("boot once from %s (%s)" % (request["device"], request["target"]))
    if clear_boot:
        actions.append("clear the pending boot override (%s)" % pending["target"])
    if command:
        actions.append("power %s (%s)" % (action, command))
    result = {
        "changed": bool(actions),
        "actions": actions,
        "driver": driver.name,
        "address": driver.address,
        "power_state_before": before,
        "power_state_after": expected_state(action) if action and driver.reports_power else before,
        "boot_override": request if set_boot else None if clear_boot else pending,
    }
    if check_mode:
        return result
    if set_boot:
        driver.set_boot_once(request)
    if clear_boot:
        driver.clear_boot_override()
    if command:
        driver.send_power(command)
        if driver.reports_power:
            result["power_state_after"] = wait_for_power(driver, (expected_state(action),), deadline, clock, sleep)
    if set_boot or clear_boot or command:
        result["boot_override"] = driver.boot_override()
    return result
