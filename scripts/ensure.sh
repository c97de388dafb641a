#!/usr/bin/env bash
# What `npm test`, `npm run demo` and `npm run bench` run first: install whatever is missing
# (system packages, node_modules) and bring the build up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ ! -d node_modules/.bin || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund >&2   # runs scripts/build.sh through the install script
else
  bash scripts/build.sh
fi
