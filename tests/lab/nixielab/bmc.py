"""The lab's BMCs: OpenStack's sushy-tools Redfish emulator and a pyghmi RMCP+ server, each a real server of its protocol.

- Redfish: one `sushy-emulator --fake` (sushy-tools, what Ironic and Metal3 test with) for several machines, its fake
  systems listed in its config file, its state in a fresh directory, HTTPS with a certificate made here and HTTP basic
  authentication from an htpasswd file.
- IPMI: tests/support/ipmi_bmc.py (pyghmi's BMC server class, what VirtualBMC is built on), one per machine on its
  own UDP port; Debian's ipmitool drives it as well as Nixie's pyghmi client does.

These classes write the servers' files and say how to start them; the caller starts the process where it wants it:
the lab in its controller namespace, on loopback, so that only the controller reaches a BMC (nixielab.bmcd then
joins each BMC to its QEMU machine), the protocol tests on the host's loopback.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
import shutil
import sys
import uuid
from pathlib import Path

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .processes import REPO_ROOT

USER = "admin"
IPMI_SERVER = REPO_ROOT / "tests" / "support" / "ipmi_bmc.py"
# A fixed namespace, so that a machine's fake system keeps its UUID (and its Redfish path) from run to run.
SYSTEM_UUIDS = uuid.UUID("6e697869-652d-4c61-8262-6d632d757569")


def self_signed_certificate(directory: Path, address: str) -> tuple[Path, Path]:
    """A self-signed CA certificate for `address` and its key, as a BMC out of the box has: (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nixie test BMC")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = Path(directory) / "bmc.pem", Path(directory) / "bmc.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclasses.dataclass
class FakeSystem:
    """One system of the Redfish emulator's fake driver."""

    name: str
    mac: str
    power_state: str = "Off"

    @property
    def uuid(self) -> str:
        return str(uuid.uuid5(SYSTEM_UUIDS, self.mac.lower()))

    @property
    def path(self) -> str:
        return "/redfish/v1/Systems/%s" % self.uuid


class RedfishEmulator:
    """One `sushy-emulator --fake` for `systems`: its files in `directory`, its URL, and the command that starts it.

    With `notify_url`, the fake driver PUTs a system's whole record there on every change it makes: the only place
    where it shows a pending reset (see nixielab.bmcd).
    """

    def __init__(self, directory: Path, systems: list[FakeSystem], password: str, *, port: int, address: str = "127.0.0.1",
                 notify_url: str | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.systems = {system.name: system for system in systems}
        self.address, self.port = address, port
        self.ca_path, self.key_path = self_signed_certificate(self.directory, address)
        self.log_path = self.directory / "emulator.log"
        self.state_dir = self.directory / "state"
        auth = self.directory / "htpasswd"
        auth.write_text("%s:%s\n" % (USER, bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()), encoding="utf-8")
        fake = [{"uuid": system.uuid, "name": system.name, "power_state": system.power_state, "external_notifier": notify_url is not None,
                 "nics": [{"mac": system.mac.lower(), "ip": address}]} for system in systems]
        config = {"SUSHY_EMULATOR_FAKE_DRIVER": True, "SUSHY_EMULATOR_STATE_DIR": str(self.state_dir),
                  "SUSHY_EMULATOR_AUTH_FILE": str(auth), "SUSHY_EMULATOR_FAKE_SYSTEMS": fake}
        if notify_url is not None:
            config["EXTERNAL_NOTIFICATION_URL"] = notify_url
        self.config_path = self.directory / "emulator.conf"
        # The emulator's config file is Python; repr() writes each value as a literal.
        self.config_path.write_text("".join("%s = %r\n" % item for item in config.items()), encoding="utf-8")

    @property
    def url(self) -> str:
        return "https://%s:%d" % (self.address, self.port)

    def path(self, name: str) -> str:
        """The Redfish path of system `name`."""
        return self.systems[name].path

    def argv(self) -> list[str]:
        executable = shutil.which("sushy-emulator") or str(Path(sys.executable).with_name("sushy-emulator"))
        return [executable, "--fake", "--config", str(self.config_path), "-i", self.address, "-p", str(self.port),
                "--ssl-certificate", str(self.ca_path), "--ssl-key", str(self.key_path)]


class IpmiServer:
    """One tests/support/ipmi_bmc.py for one machine: its files in `directory` and the command that starts it."""

    def __init__(self, directory: Path, password_path: Path, *, port: int, delay: float = 1.0):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port, self.delay = port, delay
        self.state_path = self.directory / "state.json"
        self.password_path = Path(password_path)

    def argv(self) -> list[str]:
        return [sys.executable, str(IPMI_SERVER), "--port", str(self.port), "--user", USER, "--password-file", str(self.password_path),
                "--state", str(self.state_path), "--delay", str(self.delay)]

    def state(self) -> dict:
        """What the BMC holds: power, pending_power, boot_flags, controls (every chassis control it accepted), resets."""
        return json.loads(self.state_path.read_text(encoding="utf-8"))
