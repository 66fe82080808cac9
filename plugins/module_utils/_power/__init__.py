# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Power and one-time boot control of a machine: Wake-on-LAN, or its BMC over Redfish or IPMI.

``base`` holds the driver interface and the shape of a boot override, ``control`` what the power module
does with any driver (the pure state transitions apart from the waiting), and one file per driver.
Private to the collection (leading underscore in the parent package): no compatibility promise outside it.
"""
