"""A real RMCP+ IPMI BMC on loopback for protocol tests: pyghmi's BMC server class, run as its own process.

    python ipmi_bmc.py --port N --user NAME --password-file F --state F [--delay S]

It keeps one machine's power state and boot flags in the JSON file ``--state`` (written on every change),
which a test reads to see what the BMC was told, independently of the client under test; the lab's BMC
glue (nixielab.bmcd) reads it to power a QEMU machine. Like a real BMC it applies a power change
``--delay`` seconds after accepting it, whether or not anyone asks, and it refuses Chassis Control power
cycle and hard reset on a machine that is off (completion code 0xd5, "not supported in present state").
``resets`` counts the cycles and hard resets: a reset that is over leaves the power state as it was, so
only the count tells the glue that the machine must restart.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from pyghmi.ipmi import bmc
from pyghmi.ipmi.private import serversession
from pyghmi.ipmi.private import session as ipmisession

NOT_IN_PRESENT_STATE = 0xD5
INVALID_AUTHENTICATION_ALGORITHM = 0x04
RAKP_HMAC_SHA1 = 0x01
# How often the BMC wakes between packets to carry out a pending power change.
TICK = 0.2
_open_session_response = serversession.ServerSession.create_open_session_response


def _refuse_other_suites(self, request):
    # pyghmi's server speaks cipher suite 3 (SHA-1) only, yet accepts a proposal of suite 17 (SHA-256) and
    # answers in suite 3, which its own client then fails to parse. A conforming BMC refuses an algorithm
    # it lacks (IPMI 2.0 table 13-15), and the client then proposes suite 3, as it does with ipmi_sim.
    if request[12] != RAKP_HMAC_SHA1:
        return bytes([request[0], INVALID_AUTHENTICATION_ALGORITHM, 0, 0]) + bytes(request[4:8])
    return _open_session_response(self, request)


serversession.ServerSession.create_open_session_response = _refuse_other_suites


class LabBmc(bmc.Bmc):
    """One machine behind the BMC, kept in a JSON file."""

    def __init__(self, authdata, port, state_path, delay):
        super().__init__(authdata, port=port, address="127.0.0.1")
        self.state_path = state_path
        self.delay = delay
        self.state = {"power": "off", "boot_flags": [0, 0, 0, 0, 0], "pending_power": None, "controls": [],
                      "resets": 0}
        self.apply_at = 0.0
        self.save()

    def save(self):
        with open(self.state_path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(self.state, handle)
        os.replace(self.state_path + ".tmp", self.state_path)

    def later(self, control, power):
        self.state["controls"].append(control)
        self.state["pending_power"] = power
        self.apply_at = time.monotonic() + self.delay
        self.save()

    def get_power_state(self):
        if self.state["pending_power"] and time.monotonic() >= self.apply_at:
            self.state["power"], self.state["pending_power"] = self.state["pending_power"], None
            self.save()
        return self.state["power"]

    def power_on(self):
        self.later("on", "on")

    def power_off(self):
        self.later("off", "off")

    def power_cycle(self):
        if self.get_power_state() == "off":
            return NOT_IN_PRESENT_STATE
        self.state["power"] = "off"
        self.state["resets"] += 1
        self.later("cycle", "on")
        return 0

    def power_reset(self):
        if self.get_power_state() == "off":
            return NOT_IN_PRESENT_STATE
        self.state["resets"] += 1
        self.later("reset", "on")
        return 0

    def get_system_boot_options(self, request, session):
        # pyghmi's own answer drops the EFI and persistence bits; a test must see what the client set.
        if request["data"][0] != 5:
            return session.send_ipmi_response(code=0x80)
        return session.send_ipmi_response(data=[1, 5] + self.state["boot_flags"])

    def set_system_boot_options(self, request, session):
        data = list(request["data"])
        if data[0] == 5:
            self.state["boot_flags"] = data[1:6]
            self.save()
        session.send_ipmi_response()

    def listen(self, timeout=TICK):
        # pyghmi's loop only wakes for packets; a real BMC changes the power when the delay is over.
        while True:
            ipmisession.Session.wait_for_rsp(timeout)
            self.get_power_state()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--delay", type=float, default=1.0)
    args = parser.parse_args()
    with open(args.password_file, encoding="utf-8") as handle:
        password = handle.read().strip()
    LabBmc({args.user: password}, args.port, args.state, args.delay).listen()


if __name__ == "__main__":
    main()
