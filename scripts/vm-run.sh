#!/usr/bin/env bash
# scripts/vm-run.sh [options] -- CMD...
#
# Runs CMD as root in a VM booted from a stock distro kernel (Debian's linux-image-amd64 by
# default), with the host's files at the same paths (the host's / over 9p, read-only, under a
# throwaway tmpfs overlay: writes work and vanish with the VM), in the same working directory,
# with bpffs, tracefs, securityfs and cgroups mounted. CMD's output (stdout and stderr together)
# streams to this script's stdout; the script exits with CMD's status. See docs/vm-harness.md.
#
#   --kernel IMAGE   the kernel to boot (default: the newest /boot/vmlinuz-*-amd64 other than
#                    the running kernel; installed with apt-get when there is none). Its modules
#                    must be in /lib/modules/VERSION.
#   --cgroup v2|v1|hybrid   v2 (default): cgroup2 at /sys/fs/cgroup; v1: one v1 hierarchy per
#                    controller and no cgroup2 anywhere; hybrid: v1 plus cgroup2 at
#                    /sys/fs/cgroup/unified
#   --mem MB, --smp N        default 2048, 2
#   --timeout SECONDS        the VM is killed after this long (default 1800), status 124
#   --env NAME[=VALUE]       pass a variable (repeatable); PATH, HOME, LANG, TERM, CI and
#                    CGFENCE_* are passed anyway
#   --append ARGS    more kernel command-line arguments (e.g. lsm=... to test another LSM list)
#
# Exit status: CMD's; 124 on timeout; 125 when the VM did not run CMD (its console log is
# printed). CGFENCE_VM_CONSOLE=1 streams the guest kernel's console to stderr as well.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kernel= cgroup=v2 mem=2048 smp=2 timeout=1800 append=
envs=()
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --kernel) kernel=$2; shift 2 ;;
    --cgroup) cgroup=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --append) append=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "vm-run: unknown option '$1' (the command goes after --)" >&2; usage ;;
  esac
done
[[ $# -gt 0 ]] || { echo "vm-run: no command given (usage: vm-run.sh [options] -- CMD...)" >&2; exit 2; }
case $cgroup in v2|v1|hybrid) ;; *) echo "vm-run: --cgroup must be v2, v1 or hybrid, not '$cgroup'" >&2; exit 2 ;; esac
[[ $(id -u) == 0 ]] || { echo "vm-run: must run as root (it may install packages, and the guest runs CMD as root)" >&2; exit 2; }

install() {
  echo "vm-run: installing $* with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
}
command -v qemu-system-x86_64 >/dev/null || install qemu-system-x86
command -v busybox >/dev/null || install busybox-static
# No kernel in /boot yet (a fresh machine) is an empty answer, not a failed pipeline (set -e).
newest_kernel() { { ls /boot/vmlinuz-*-amd64 2>/dev/null || true; } | { grep -v "vmlinuz-$(uname -r)\$" || true; } | sort -V | tail -1; }
if [[ -z $kernel ]]; then
  kernel=$(newest_kernel)
  if [[ -z $kernel ]]; then install linux-image-amd64; kernel=$(newest_kernel); fi
  [[ -n $kernel ]] || { echo "vm-run: no /boot/vmlinuz-*-amd64 after installing linux-image-amd64" >&2; exit 125; }
fi
[[ -r $kernel ]] || { echo "vm-run: --kernel $kernel: no such readable file" >&2; exit 2; }
version=$(basename "$kernel"); version=${version#vmlinuz-}

job=$(mktemp -d /tmp/cgfence-vm.XXXXXX)
qemu_pid= cat_pid=
cleanup() {
  set +e
  if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null; sleep 0.5; kill -9 "$qemu_pid" 2>/dev/null || true
  fi
  [[ -n $cat_pid ]] && kill "$cat_pid" 2>/dev/null
  rm -rf "$job"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$here/vm/build-initramfs.sh" "$version" "$job/initramfs.gz"
cp "$here/vm/guest-run.sh" "$job/guest-run.sh"
printf 'VM_CGROUP=%q\nVM_CWD=%q\n' "$cgroup" "$PWD" > "$job/job.env"
printf '%s\0' "$@" > "$job/cmd"
{
  for v in PATH HOME LANG TERM CI $(compgen -e | grep '^CGFENCE_' || true); do
    [[ -n ${!v+x} ]] && printf 'export %s=%q\n' "$v" "${!v}"
  done
  for e in "${envs[@]}"; do
    if [[ $e == *=* ]]; then printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"
    elif [[ -n ${!e+x} ]]; then printf 'export %s=%q\n' "$e" "${!e}"
    fi
  done
} > "$job/env"

serial="file:$job/console.log"
if [[ ${CGFENCE_VM_CONSOLE:-} == 1 ]]; then serial=stdio; fi
# TCG: KVM is not available where this was built; -cpu max gives the guest what TCG can emulate.
# TCG by default (KVM was unusable where this was built); CGFENCE_VM_KVM=1 tries KVM first.
accel=(-accel tcg)
if [[ -w /dev/kvm && ${CGFENCE_VM_KVM:-0} == 1 ]]; then accel=(-accel kvm -accel tcg); fi
# The output port writes into a fifo that cat copies to our stdout: cat shares our stdout's
# file offset, where a file qemu opened itself would not (it would overwrite what follows).
mkfifo "$job/out"
cat "$job/out" &
cat_pid=$!
qemu-system-x86_64 "${accel[@]}" -cpu max -m "$mem" -smp "$smp" \
  -nodefaults -display none -no-reboot -monitor none \
  -kernel "$kernel" -initrd "$job/initramfs.gz" \
  -append "console=ttyS0 loglevel=4 panic=-1 $append" \
  -serial "$serial" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path="$job",mount_tag=job,security_model=none,multidevs=remap \
  -device virtio-serial-pci -chardev file,id=out,path="$job/out" \
  -device virtserialport,chardev=out,name=cgfence.out \
  < /dev/null > /dev/null 2> "$job/qemu.err" &
qemu_pid=$!
console_tail() {
  echo "vm-run: the guest console's last lines:" >&2
  tail -40 "$job/console.log" >&2 2>/dev/null || true
}
start=$SECONDS
while kill -0 "$qemu_pid" 2>/dev/null; do
  if (( SECONDS - start >= timeout )); then
    echo "vm-run: timeout after ${timeout}s; killing the VM" >&2
    if [[ -s $job/state ]]; then
      echo "vm-run: what the guest was doing last (it writes this every 15 s):" >&2
      cat "$job/state" >&2
    fi
    console_tail
    exit 124
  fi
  sleep 0.5
done
wait "$qemu_pid" || true
qemu_pid=
wait "$cat_pid" || true
if [[ -s $job/status ]]; then exit "$(cat "$job/status")"; fi
echo "vm-run: the VM stopped without running the command to its end; qemu said:" >&2
cat "$job/qemu.err" >&2 || true
console_tail
exit 125
