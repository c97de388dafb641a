#!/usr/bin/env bash
# Runs the test tiers in order (vitest.config.ts): unit, kernel, e2e, vm. Each tier is one
# vitest run, so a tier's failure is reported under its name; every tier runs even when an
# earlier one failed, and the exit status is non-zero if any failed. The failed tests are
# listed again at the end (scripts/test-failures.mjs), where a CI log's tail shows them.
set -uo pipefail
cd "$(dirname "$0")/.."
reports=$(mktemp -d /tmp/cgfence-test-reports-XXXXXX)
trap 'rm -rf "$reports"' EXIT
failed=()
for tier in unit kernel e2e vm; do
  echo "== test tier: $tier"
  npx --no-install vitest run --project "$tier" --passWithNoTests \
    --reporter=default --reporter=json --outputFile.json="$reports/$tier.json" || failed+=("$tier")
done
if ((${#failed[@]})); then
  echo "== failed tests"
  files=()
  for tier in "${failed[@]}"; do files+=("$reports/$tier.json"); done
  node scripts/test-failures.mjs "${files[@]}"
  echo "test tiers failed: ${failed[*]}" >&2
  exit 1
fi
echo "all test tiers passed"
