#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine (as root) for `make demo` and `make test`:
# the Debian packages the lab and the tests drive, a venv with the Python requirements,
# the collection path Ansible resolves `nixie.provision` through, and ansible-test's pip bootstrap.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

apt_packages=(
  qemu-system-x86 qemu-utils ipxe-qemu ipxe ovmf seabios  # lab machines and their firmware
  qemu-system-arm qemu-efi-aarch64                         # the lab's arm64 machine (virt, AAVMF)
  dnsmasq-base                                             # the lab's site DHCP server (no system service)
  isc-dhcp-relay                                           # the routed lab's relay (its service is kept from starting, below)
  busybox-static cpio kmod xz-utils zstd                   # the lab's test installer initramfs
  fdisk                                                    # partition tables on the lab's prefilled disks
  dosfstools mtools syslinux syslinux-common systemd-boot-efi  # the lab's installed-disk image, built unmounted
  iproute2 iptables nftables tcpdump                       # namespaces, bridges, captures, packet loss
  tftp-hpa curl udhcpc openssh-client dropbear-bin         # real clients for protocol tests
  ipmitool                                                 # an independent IPMI client for the power tests
  chromium                                                 # a real browser for the status page tests (DevTools pipe)
  nginx-light                                              # bench/'s HTTP reference (bench starts its own; no service)
  nix-bin                                                  # builds the fixture installer flake
  shellcheck                                               # ansible-test sanity's shellcheck test (agent/nixie-agent)
  git make rsync python3-venv
)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "bootstrap: installing ${missing[*]} needs root" >&2; exit 1; }
  apt-get update -q
  # isc-dhcp-relay's service would start a relay on the host's own interfaces: no service may start while installing,
  # and its own stays disabled. The lab runs dhcrelay itself, in its router namespace.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if command -v systemctl >/dev/null && systemctl is-enabled --quiet isc-dhcp-relay 2>/dev/null; then
  systemctl disable --now isc-dhcp-relay
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] || [ requirements-dev.txt -nt .venv/.installed ] || [ requirements.txt -nt .venv/.installed ]; then
  "$python" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
  touch .venv/.installed
fi

# Ansible (and the tests) find the collection as ansible_collections/nixie/provision.
mkdir -p .cache/collections/ansible_collections/nixie
ln -sfn "$root" .cache/collections/ansible_collections/nixie/provision

# ansible-test bootstraps pip in each sanity venv with a get-pip.py it downloads from a host this
# network cannot reach; it takes a cached copy instead, so give it one that uses the bundled ensurepip.
pip_ver=$(.venv/bin/python - <<'PY'
import sys, types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="%d.%d" % sys.version_info[:2]))["pip"])
PY
)
cache=~/.ansible/test/cache
mkdir -p "$cache"
cat > "$cache/get_pip_${pip_ver//./_}.py" <<'PY'
"""Offline stand-in for get-pip.py: bootstrap pip from ensurepip, then install what was asked."""
import ensurepip
import subprocess
import sys

ensurepip.bootstrap()
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install",
                           "--cert", "/etc/ssl/certs/ca-certificates.crt"] + args)
PY

# UEFI HTTP boot on IPv6 needs an iPXE that runs autoexec.ipxe from beside its own URL (2024-03 or later);
# bookworm's is from 2019. The lab takes trixie's package, resolved and signature-checked by apt with a
# private state under .cache, so the system's apt sources stay as they are.
ipxe_current=.cache/ipxe-current
if [ ! -e "$ipxe_current/usr/lib/ipxe/ipxe.efi" ]; then
  apt_state=$root/.cache/apt-trixie
  rm -rf "$apt_state"
  mkdir -p "$apt_state/lists/partial" "$apt_state/archives/partial" "$apt_state/download" "$apt_state/empty"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    > "$apt_state/sources.list"
  : > "$apt_state/status"
  apt_opts=(-o "Dir::Etc::SourceList=$apt_state/sources.list" -o "Dir::Etc::SourceParts=$apt_state/empty"
            -o "Dir::State::Lists=$apt_state/lists" -o "Dir::Cache=$apt_state" -o "Dir::State::status=$apt_state/status"
            -o "Dir::Etc::Preferences=$apt_state/empty/none" -o "Dir::Etc::PreferencesParts=$apt_state/empty"
            -o APT::Architecture=amd64 -o APT::Sandbox::User=root)
  apt-get "${apt_opts[@]}" update -q
  (cd "$apt_state/download" && apt-get "${apt_opts[@]}" download ipxe)
  rm -rf "$ipxe_current.tmp"
  dpkg-deb -x "$apt_state"/download/ipxe_*_all.deb "$ipxe_current.tmp"
  test -e "$ipxe_current.tmp/usr/lib/ipxe/ipxe.efi"
  mv "$ipxe_current.tmp" "$ipxe_current"
  rm -rf "$apt_state"
fi
