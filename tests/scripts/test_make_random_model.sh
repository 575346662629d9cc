#!/usr/bin/env bash
# make_random_model (scripts/make-random-model.sh's generator) on the demo model's configuration:
# a snapshot that loads; and a write of model.safetensors that fails once, as on a disk full for
# a moment, is an error (exit 2 naming the file), not a snapshot short of a chunk reported as
# written. The failure is injected with strace (skipped, 77, where strace cannot trace).
#
#   test_make_random_model.sh MAKE_RANDOM_MODEL SOURCE_DIR
set -euo pipefail
bin=$1
src=$2/models/demo-tiny
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A one-shot tool that leaves its buffers to exit: under the sanitizer build, its leaks are not
# what this tests.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0

"$bin" "$src" "$src" "$work/ok" f32 0 >"$work/out"
grep -q "^wrote $work/ok: " "$work/out"
[ -s "$work/ok/model.safetensors" ]

if ! strace -f -qq -o /dev/null true 2>/dev/null; then
  echo "strace cannot trace here: the write failure is not tried"
  exit 77
fi
# Writes 1-9 copy the snapshot's JSON files (demo-tiny has 9), 10 and 11 are model.safetensors'
# header: 12 is one of its tensors' chunks. The message below says so if that count moves.
rc=0
strace -f -qq -o /dev/null -e trace=write -e inject=write:error=ENOSPC:when=12 \
  "$bin" "$src" "$src" "$work/bad" f32 0 >"$work/out" 2>"$work/err" || rc=$?
if [ $rc -ne 2 ] || ! grep -qx "make_random_model: $work/bad/model.safetensors: write failed" \
  "$work/err"; then
  echo "a failed write of model.safetensors: exit $rc (want 2), stderr:"
  cat "$work/err"
  exit 1
fi
echo "ok: a failed write is reported"
