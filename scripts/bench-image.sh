#!/usr/bin/env bash
# Resampler speed: docqa's Pillow-exact LANCZOS (AVX-512 or AVX2 where the CPU has them, OpenMP
# over rows)
# against a plain scalar port of Pillow's loops, on the resizes a page goes through, in the same
# run; prints milliseconds and the ratio, and fails if the two ever give different bytes.
# Beside the wall times, each side's CPU time and their ratio: the scalar port runs on one thread,
# docqa on OMP_NUM_THREADS (default all cores; OMP_NUM_THREADS=1 for one against one), under
# docqa's OpenMP settings (GOMP_SPINCOUNT=300 unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is
# set); on a shared host the CPU times move least.
#
#   scripts/bench-image.sh [BUILD_DIR] [REPEATS]     (default: build 3)
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
bench_args 2 "$@"
cd "$(dirname "$0")/.."
build=${1:-build}
bench=$build/tests/image/bench_resize
[ -x "$bench" ] || { echo "bench-image: $bench not found; build first" >&2; exit 2; }
bench_threading
"$bench" "${2:-3}"
