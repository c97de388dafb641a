#!/bin/busybox sh
# Stage 1 of the VM (the initramfs's /init, busybox only): load the modules the root needs,
# build the root (the host's / over 9p, read-only, under a tmpfs overlay), put the job share
# in it and switch_root into stage 2 (scripts/vm/guest-run.sh, copied into the job share).
# switch_root and not chroot: runc resolves a container's root through / and /proc/self/root,
# so with a chroot `runc exec` lands outside the container.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "cgfence-vm stage 1: $*" >/dev/ttyS0; poweroff -f; }
# One module a line, in dependency order (scripts/vm/build-initramfs.sh wrote it).
while read -r m; do insmod "/modules/$m" || fail "insmod $m failed"; done < /modules/order
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro hostroot /lower || fail "cannot mount the host root (9p tag hostroot)"
mount -t tmpfs -o mode=0755 upper /upper || fail "tmpfs for the overlay"
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot || fail "overlay on the host root"
# Fresh /run, /tmp and /var/tmp: tmpfs, not overlay (containerd's overlay snapshots need a non-overlay upper).
mount -t tmpfs -o mode=0755 run /newroot/run || fail "tmpfs /run"
mount -t tmpfs -o mode=1777 tmp /newroot/tmp || fail "tmpfs /tmp"
# /var/tmp too: files written on the overlay root (9p lower, tmpfs upper: layers on two
# filesystems) stat with the upper fs's st_dev while the kernel sees the overlay's, so exec
# identities computed in user space would not match there.
mount -t tmpfs -o mode=1777 vartmp /newroot/var/tmp || fail "tmpfs /var/tmp"
mkdir -p /newroot/run/vm-job
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 job /newroot/run/vm-job || fail "cannot mount the job share (9p tag job)"
# A working directory under one of the fresh tmpfs mounts (a checkout in /tmp, as CI may use)
# would be hidden by them: give it back, as the rest of the host's files are, over a throwaway
# overlay of its own.
cwd=$(sed -n 's/^VM_CWD=//p' /newroot/run/vm-job/job.env 2>/dev/null | head -n 1)
case "$cwd" in
  /tmp/*|/var/tmp/*|/run/*)
    if [ -d "/lower$cwd" ]; then
      mkdir -p /upper/cwd/data /upper/cwd/work "/newroot$cwd"
      mount -t overlay -o "lowerdir=/lower$cwd,upperdir=/upper/cwd/data,workdir=/upper/cwd/work" cwd "/newroot$cwd" \
        || fail "overlay on the working directory $cwd"
    fi ;;
esac
mount --move /dev /newroot/dev
umount /proc /sys 2>/dev/null
exec switch_root /newroot /bin/bash /run/vm-job/guest-run.sh
