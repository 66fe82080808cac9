"""nixielab: the virtual lab Nixie is tested in, made of real processes in private network namespaces.

- `LabNetwork` (net.py): namespaces, bridge, the controller's `nixie0`, client namespaces, taps.
- `SiteDhcp` (sitedhcp.py): the network's ordinary DHCP server, which knows nothing of network boot.
- `Machine` (machine.py): QEMU with SeaBIOS or OVMF, booting from the network first.
- `PowerDaemon` (powerd.py): the Wake-on-LAN receiver that powers machines on; tests wake machines only through it
  or through a BMC.
- `BmcGlue` (bmcd.py): the machines' BMCs (nixielab.bmc: sushy-tools' Redfish emulator, a pyghmi IPMI server per
  machine) on the controller's loopback, and the glue that starts, resets and stops QEMU as each BMC says.
- `build_installer`, `append_cpio` (installer.py): the test installer (Debian kernel + busybox/dropbear initramfs).
- `nixielab.capture.Capture`: tcpdump on the bridge, read back with scapy (imported on its own: scapy is slow to load).
- `nixielab.playbook`: hosts.json/nixie.yml inventories and ansible-playbook in the controller namespace.
- `python -m nixielab demo | teardown | build-installer`: see __main__.py.
"""

from .bmcd import BmcGlue
from .installer import Installer, append_cpio, build_installer
from .machine import Machine
from .net import LabClient, LabNetwork
from .powerd import PowerDaemon
from .processes import LabError
from .sitedhcp import SiteDhcp
from .wol import magic_packet

__all__ = ["BmcGlue", "Installer", "LabClient", "LabError", "LabNetwork", "Machine", "PowerDaemon", "SiteDhcp", "append_cpio", "build_installer",
           "magic_packet"]
