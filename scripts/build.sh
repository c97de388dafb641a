#!/usr/bin/env bash
# The build recipe: system packages, BPF objects (CO-RE, vmlinux.h from this kernel's BTF),
# the native addon and launcher (node-gyp), then the TypeScript.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-bpf.sh
if [[ -f build/Makefile && build/Makefile -nt binding.gyp ]]; then
  npx --no-install node-gyp build --loglevel=warn >&2
else
  npx --no-install node-gyp configure --loglevel=warn >&2 && npx --no-install node-gyp build --loglevel=warn >&2
fi
npx --no-install tsc -p .
