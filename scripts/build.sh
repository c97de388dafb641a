#!/usr/bin/env bash
# The build recipe: BPF objects (CO-RE, vmlinux.h from this kernel's BTF), the native addon
# and fd-holder (node-gyp), the launcher (static musl: scripts/build-launcher.sh), then the
# TypeScript. System packages are scripts/setup.sh's job; here they are only checked, so a
# missing one is named instead of failing in a compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --check
bash scripts/build-bpf.sh
if [[ -f build/Makefile && build/Makefile -nt binding.gyp ]]; then
  npx --no-install node-gyp build --loglevel=warn >&2
else
  npx --no-install node-gyp configure --loglevel=warn >&2 && npx --no-install node-gyp build --loglevel=warn >&2
fi
bash scripts/build-launcher.sh
npx --no-install tsc -p .
