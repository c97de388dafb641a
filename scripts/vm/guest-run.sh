#!/bin/bash
# Stage 2 of the VM, as PID 1 in the switched root (the host's files over a tmpfs overlay):
# mount what a cgfence node has, run the job's command in its working directory with its
# output on the virtio port the host streams, write its exit status to the job share and
# power off. The job share (/run/vm-job) holds: job.env (VM_CGROUP, VM_CWD), cmd (argv, NUL-separated), env (exported variables).
set -u
job=/run/vm-job
status=125
finish() {
  echo "$status" > "$job/status.tmp" && mv "$job/status.tmp" "$job/status"
  sync
  # Let the host drain the output port before the machine goes away.
  sleep 0.3
  echo o > /proc/sysrq-trigger 2>/dev/null
  poweroff -f 2>/dev/null
  sleep 30
}
trap finish EXIT
. "$job/job.env"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t securityfs securityfs /sys/kernel/security
mount -t bpf -o mode=0700 bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
case "$VM_CGROUP" in
  v2)
    mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup ;;
  v1|hybrid)
    # One hierarchy per controller the kernel has, like a v1 systemd host; hybrid adds v2 at
    # /sys/fs/cgroup/unified like this project's build host. v1 leaves no cgroup2 mounted.
    mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup
    for c in $(awk 'NR > 1 && $4 == 1 { print $1 }' /proc/cgroups); do
      mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
    done
    mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
    if [[ $VM_CGROUP == hybrid ]]; then
      mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup/unified
    fi ;;
  *) echo "cgfence-vm: unknown cgroup layout '$VM_CGROUP'" > /dev/ttyS0; exit ;;
esac
ip link set lo up
hostname cgfence-vm
out=
for p in /sys/class/virtio-ports/*; do
  [[ $(cat "$p/name" 2>/dev/null) == cgfence.out ]] && out=/dev/$(basename "$p")
done
[[ -n $out ]] || { echo "cgfence-vm: no virtio port named cgfence.out" > /dev/ttyS0; exit; }
mapfile -d '' argv < "$job/cmd"
# What the guest is doing, every 15 s, for the host to print if the run times out
# (scripts/vm-run.sh): a hang shows where it is, and a frozen guest by the stale time.
(
  while sleep 15; do
    {
      echo "== guest state at $(date -u +%T), up $(cut -d' ' -f1 /proc/uptime) s"
      ps --ppid 2 -p 2 --deselect -o pid,ppid,stat,etimes,time,args --forest | cut -c1-200
      for f in /run/cgft-*/daemon.log /run/cgft-*/containerd/containerd.log; do
        [[ -f $f ]] && { echo "== last lines of $f"; tail -n 25 "$f" | cut -c1-300; }
      done
      echo "== the guest kernel's last messages"
      dmesg | tail -n 15
    } > "$job/state.tmp" 2>&1 && mv "$job/state.tmp" "$job/state"
  done
) &
(
  . "$job/env"
  cd "$VM_CWD" || { echo "cgfence-vm: no directory $VM_CWD in the guest" >&2; exit 125; }
  exec "${argv[@]}"
) > "$out" 2>&1 < /dev/null
status=$?
# A command killed by a signal (a segfault under emulation, say): what the guest kernel said
# about it, which the console does not show at this loglevel.
if (( status > 128 )); then
  { echo "cgfence-vm: the command died of signal $((status - 128)); the guest kernel's last messages:"
    dmesg | tail -n 25; } > "$out" 2>&1
fi
