#!/usr/bin/env bash
# One real-size N=4 page end to end on the CPU reference: per-stage ms, decode tokens/s, peak RSS.
#
#   scripts/bench-model.sh [256m|2.2b|SNAPSHOT_DIR]... (default: 256m)
#
# For 256m / 2.2b a random-weight snapshot with the real dimensions is generated once into
# $MODELS (default /tmp/docqa-random-models, f32; DTYPE=bf16 for bf16 weights). The page is
# ../shared/fixtures/images/portrait_page.png (850x1100 -> 4x4 tiles + global), the prompt the
# DocVQA question, 32 greedy tokens (MAX_NEW), BATCH requests of that page (default 1).
# The numbers are absolute on this machine; speed targets and ratios live in a later benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
shared=${DOCQA_SHARED_DIR:-$PWD/../shared}
models=${MODELS:-/tmp/docqa-random-models}
dtype=${DTYPE:-f32}
image=${IMAGE:-$shared/fixtures/images/portrait_page.png}
[ -f "$image" ] || { echo "bench-model: $image not found" >&2; exit 2; }
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" --target bench_model make_random_model -j 2 >/dev/null
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
[ $# -gt 0 ] || set -- 256m
for m in "$@"; do
  case "$m" in
    256m|2.2b)
      dir=$models/smolvlm-$m-random-$dtype
      if [ ! -f "$dir/model.safetensors" ]; then
        BUILD=$build scripts/make-random-model.sh "$m" "$dir" "$dtype"
      fi ;;
    *) dir=$m ;;
  esac
  "$build/tests/model/bench_model" "$dir" "$image" 4 "${MAX_NEW:-32}" "${BATCH:-1}"
done
