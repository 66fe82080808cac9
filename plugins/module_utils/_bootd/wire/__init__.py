# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wire formats: DHCPv4 and DHCPv6 parsed and encoded, knowing nothing of PXE policy, sockets or hosts."""
