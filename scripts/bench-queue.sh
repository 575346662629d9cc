#!/usr/bin/env bash
# Queue overhead alone: claim + complete with no model work, on one SQLite file, with 1 and with
# 8 worker processes, printed as operations (jobs) per second and as a ratio within this run.
#
#   scripts/bench-queue.sh [BUILD_DIR] [DOCS] [BATCH]
#
# DOCS x 10 pages x 2 questions jobs (default 200 -> 4,000 jobs); BATCH jobs per claim (default 1;
# try 8 to see what batching buys).
set -euo pipefail
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      echo "bench-queue: unknown option '$arg'" >&2
      usage >&2
      exit 2
      ;;
  esac
done
[ $# -le 3 ] || {
  echo "bench-queue: at most 3 arguments, got $#" >&2
  usage >&2
  exit 2
}
cd "$(dirname "$0")/.."
build=${1:-build}
docs=${2:-200}
batch=${3:-1}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" --target bench_queue -j "$(nproc)" >/dev/null
for b in $batch; do
  "$build/tests/jobs/bench_queue" "$docs" "$b" 8
done
