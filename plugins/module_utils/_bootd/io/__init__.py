# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""I/O: the sockets (ProxyDHCP, proxy DHCPv6, TFTP, HTTP) that carry the policy's answers."""
