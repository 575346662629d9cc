#!/usr/bin/env bash
# Resampler speed: docqa's Pillow-exact LANCZOS (AVX-512 or AVX2 where the CPU has them, OpenMP
# over rows)
# against a plain scalar port of Pillow's loops, on the resizes a page goes through, in the same
# run; prints milliseconds and the ratio, and fails if the two ever give different bytes.
#
#   scripts/bench-image.sh [BUILD_DIR] [REPEATS]     (default: build 3)
set -euo pipefail
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      echo "bench-image: unknown option '$arg'" >&2
      usage >&2
      exit 2
      ;;
  esac
done
[ $# -le 2 ] || {
  echo "bench-image: at most 2 arguments, got $#" >&2
  usage >&2
  exit 2
}
cd "$(dirname "$0")/.."
build=${1:-build}
bench=$build/tests/image/bench_resize
[ -x "$bench" ] || { echo "bench-image: $bench not found; build first" >&2; exit 2; }
echo "threads: ${OMP_NUM_THREADS:-all cores}"
"$bench" "${2:-3}"
