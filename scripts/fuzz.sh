#!/usr/bin/env bash
# Builds and runs one libFuzzer target (ASan + UBSan) for a bounded time:
#   scripts/fuzz.sh TARGET SECONDS     TARGET: args reply json-escape config runc-state bundle-config node-hint
# The seeds in test/fuzz/corpus/TARGET are read, never written: new inputs go to a temp dir,
# and a crash leaves its input in build/fuzz/crash-TARGET-* (the exit status is non-zero).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET SECONDS}
secs=${2:?usage: scripts/fuzz.sh TARGET SECONDS}
r=native/cgfence-runc
case "$target" in
  args) src=("$r/args.c") ;;
  reply) src=("$r/reply.c" "$r/strict-json.c") ;;
  json-escape) src=("$r/json.c" "$r/strict-json.c") ;;
  config) src=("$r/config.c") ;;
  runc-state) src=(native/fd-holder/runc-state.c "$r/strict-json.c") ;;
  bundle-config) src=("$r/bundle-config.c" "$r/strict-json.c") ;;
  node-hint) src=("$r/node-hint.c") ;;
  *) echo "fuzz.sh: unknown target \"$target\" (args reply json-escape config runc-state bundle-config node-hint)" >&2; exit 2 ;;
esac
[[ -f /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a ]] || bash scripts/setup.sh
mkdir -p build/fuzz
bin=build/fuzz/fuzz-$target
# Rebuilt only when a source or header changed: the sanitizer build is the slow part.
if [[ ! -x $bin ]] || [[ -n $(find "test/fuzz/fuzz-$target.c" "${src[@]}" native/cgfence-runc/*.h native/fd-holder/*.h scripts/fuzz.sh -newer "$bin" 2>/dev/null) ]]; then
  clang-14 -g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    $(pkg-config --cflags json-c) "test/fuzz/fuzz-$target.c" "${src[@]}" $(pkg-config --libs json-c) -o "$bin.tmp"
  mv "$bin.tmp" "$bin"
fi
work=$(mktemp -d /tmp/cgfence-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
dict=()
[[ -f test/fuzz/$target.dict ]] && dict=(-dict="test/fuzz/$target.dict")
exec_args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
           -artifact_prefix="build/fuzz/crash-$target-" "${dict[@]}" "$work" "test/fuzz/corpus/$target")
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 "$bin" "${exec_args[@]}"
