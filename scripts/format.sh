#!/usr/bin/env bash
# One layout for the whole tree: prettier for TypeScript (.prettierrc.json), clang-format for
# C, C++ and BPF C (.clang-format files). `npm run format` rewrites; `--check` (run by
# `npm run lint`, so by CI) lists the files that differ and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
[[ ${1:-} == --check ]] && check=1

mapfile -t ts < <(git ls-files '*.ts' '*.mts' '*.cts' '*.mjs')
mapfile -t c < <(git ls-files '*.c' '*.h' '*.cc')
command -v clang-format >/dev/null || { echo "format: clang-format is missing (bash scripts/setup.sh installs it)" >&2; exit 1; }

if (( check )); then
  status=0
  npx --no-install prettier --check --log-level warn "${ts[@]}" || status=1
  bad=()
  for f in "${c[@]}"; do
    clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if (( ${#bad[@]} )); then
    printf 'format: clang-format would change %s\n' "${bad[@]}" >&2
    status=1
  fi
  (( status == 0 )) || echo "format: run 'npm run format' and commit the result" >&2
  exit $status
fi
npx --no-install prettier --write --log-level warn "${ts[@]}"
clang-format -i "${c[@]}"
