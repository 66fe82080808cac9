# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The transient boot server: ProxyDHCP, TFTP (iPXE binaries only), HTTP (scripts, kernel, initrd, agent API).

Private to the collection (leading underscore in the parent package): no compatibility promise outside it.
"""
