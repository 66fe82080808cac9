# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Policy: what each MAC is answered (boot file, iPXE script), decided without sockets."""
