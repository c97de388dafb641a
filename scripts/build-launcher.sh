#!/usr/bin/env bash
# Builds cgfence-runc: static, against musl (native/musl/fortify.c says why), with the
# system's json-c. Rebuilt only when a source is newer than the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/Release/cgfence-runc
src=(native/cgfence-runc/*.c native/musl/fortify.c)
if [[ -x $out && -z $(find "${src[@]}" native/cgfence-runc/*.h scripts/build-launcher.sh -newer "$out" 2>/dev/null) ]]; then
  exit 0
fi
command -v musl-gcc >/dev/null || { echo "cgfence build: musl-gcc is missing (run: bash scripts/setup.sh, as root)" >&2; exit 1; }
libdir=$(pkg-config --variable=libdir json-c)
incdir=$(pkg-config --variable=includedir json-c)
# musl-gcc searches musl's headers only: json-c's own are made visible alone, not /usr/include.
inc=build/musl-include
mkdir -p "$inc" build/Release
ln -sfn "$incdir/json-c" "$inc/json-c"
musl-gcc -std=gnu11 -O2 -Wall -Wextra -static -I"$inc" -I"$inc/json-c" \
  "${src[@]}" "$libdir/libjson-c.a" -o "$out.tmp"
mv -f "$out.tmp" "$out"
