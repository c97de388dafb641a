#!/usr/bin/env bash
# scripts/vm/build-initramfs.sh VERSION OUT: a busybox initramfs for kernel VERSION that
# mounts the host's root over 9p (scripts/vm/initramfs-init.sh). The modules come from
# /lib/modules/VERSION in the order `modprobe --show-depends` gives, decompressed (busybox
# insmod takes plain .ko files).
set -euo pipefail
version=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
[[ -d /lib/modules/$version ]] || { echo "build-initramfs: no modules for kernel $version in /lib/modules/$version" >&2; exit 1; }
bb=$(command -v busybox) || { echo "build-initramfs: busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/modules"
cp "$bb" "$root/bin/busybox"
cp "$here/initramfs-init.sh" "$root/init"
chmod 0755 "$root/init"
: > "$root/modules/order"
# virtio_pci: the PCI transport; 9pnet_virtio + 9p: the host's root and the job share;
# overlay: the throwaway upper; virtio_console: the output port.
for mod in virtio_pci 9pnet_virtio 9p overlay virtio_console; do
  while read -r verb path _; do
    [[ $verb == insmod ]] || continue
    name=$(basename "$path"); name=${name%.xz}; name=${name%.zst}
    grep -qx "$name" "$root/modules/order" && continue
    case $path in
      *.xz) xz -dc "$path" > "$root/modules/$name" ;;
      *.zst) zstd -qdc "$path" > "$root/modules/$name" ;;
      *) cp "$path" "$root/modules/$name" ;;
    esac
    echo "$name" >> "$root/modules/order"
  done < <(modprobe -S "$version" --show-depends "$mod")
done
(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$out"
