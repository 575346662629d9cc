#!/usr/bin/env bash
# Queue overhead alone: claim + complete with no model work, on one SQLite file, with 1 and with
# 8 worker processes, printed as operations (jobs) per second and as a ratio within this run,
# and the workers' CPU microseconds a job (a shared host's load moves it least).
#
#   scripts/bench-queue.sh [BUILD_DIR] [DOCS] [BATCH]
#
# DOCS x 10 pages x 2 questions jobs (default 200 -> 4,000 jobs); BATCH jobs per claim (default 1;
# try 8 to see what batching buys).
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
bench_args 3 "$@"
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
