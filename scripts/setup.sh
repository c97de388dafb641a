#!/usr/bin/env bash
# Installs the Debian packages cgfence needs and mounts the kernel filesystems it uses.
# Idempotent and quiet when there is nothing to do. `npm test`, `npm run demo` and
# `npm run bench` run it first (scripts/ensure.sh); `--check` only reports what is missing
# (the build uses that: `npm ci` never installs system packages as a side effect).
set -euo pipefail
check_only=0
[[ ${1:-} == --check ]] && check_only=1

packages=(clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev libseccomp-dev pkg-config
          gcc libc6-dev make containerd runc busybox-static iproute2
          libjson-c-dev musl-tools clang-14 libclang-rt-14-dev clang-format)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if ((check_only)); then
    echo "cgfence build: missing system packages: ${missing[*]} (run: bash scripts/setup.sh, as root)" >&2
    exit 1
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "cgfence setup: missing packages: ${missing[*]} (run as root, or: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "cgfence setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

((check_only)) && exit 0

# bpffs and tracefs are not mounted at boot on every host; pins and tracepoints need them.
mounted() { awk -v d="$1" -v t="$2" '$2==d && $3==t {f=1} END {exit !f}' /proc/mounts; }
if [[ $(id -u) -eq 0 ]]; then
  mounted /sys/fs/bpf bpf || mount -t bpf bpf /sys/fs/bpf
  mounted /sys/kernel/tracing tracefs || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
fi
