#!/usr/bin/env bash
# Runs the test tiers in order (vitest.config.ts): unit, kernel, e2e, vm. Each tier is one
# vitest run, so a tier's failure is reported under its name; every tier runs even when an
# earlier one failed, and the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
failed=()
for tier in unit kernel e2e vm; do
  echo "== test tier: $tier"
  npx --no-install vitest run --project "$tier" --passWithNoTests || failed+=("$tier")
done
if ((${#failed[@]})); then
  echo "test tiers failed: ${failed[*]}" >&2
  exit 1
fi
echo "all test tiers passed"
