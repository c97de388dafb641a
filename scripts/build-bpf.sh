#!/usr/bin/env bash
# Compiles bpf/*.bpf.c into build/bpf/*.bpf.o and a libbpf skeleton header for each, which the
# addon includes to embed the object bytes. vmlinux.h comes from the running kernel's BTF and is
# never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.output/bpf
mkdir -p "$out"
btf=${CGFENCE_BTF:-/sys/kernel/btf/vmlinux}
if [[ ! -s $out/vmlinux.h || $btf -nt $out/vmlinux.h ]]; then
  [[ -r $btf ]] || { echo "build-bpf: no kernel BTF at $btf (CONFIG_DEBUG_INFO_BTF is required)" >&2; exit 1; }
  bpftool btf dump file "$btf" format c > "$out/vmlinux.h.tmp"
  mv "$out/vmlinux.h.tmp" "$out/vmlinux.h"
fi
arch=$(uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
for src in bpf/*.bpf.c; do
  name=$(basename "$src" .bpf.c)
  obj=$out/$name.bpf.o
  skel=$out/$name.skel.h
  if [[ ! -f $skel || $src -nt $skel || -n $(find bpf/include -newer "$skel" -print -quit) ]]; then
    clang -g -O2 -target bpf -D__TARGET_ARCH_$arch -Wall -Werror \
      -I"$out" -Ibpf/include -c "$src" -o "$obj"
    llvm-strip -g "$obj" 2>/dev/null || true
    bpftool gen skeleton "$obj" name "${name//-/_}_bpf" > "$skel.tmp"
    mv "$skel.tmp" "$skel"
  fi
done
