#!/usr/bin/env bash
# Resampler speed: docqa's Pillow-exact LANCZOS (AVX-512 or AVX2 where the CPU has them, OpenMP
# over rows)
# against a plain scalar port of Pillow's loops, on the resizes a page goes through, in the same
# run; prints milliseconds and the ratio, and fails if the two ever give different bytes.
#
#   scripts/bench-image.sh [BUILD_DIR] [REPEATS]     (default: build 3)
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
bench_args 2 "$@"
cd "$(dirname "$0")/.."
build=${1:-build}
bench=$build/tests/image/bench_resize
[ -x "$bench" ] || { echo "bench-image: $bench not found; build first" >&2; exit 2; }
echo "threads: ${OMP_NUM_THREADS:-all cores}"
"$bench" "${2:-3}"
