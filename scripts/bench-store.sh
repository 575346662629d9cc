#!/usr/bin/env bash
# Queue overhead per store: claim + complete with no model work, with 1, 8 and 32 worker
# processes, on SQLite and on PostgreSQL (a throwaway local server from Debian's postgresql
# package, started and stopped by the benchmark), in one run, printed as a table of operations
# (jobs) per second with ratios against SQLite with 1 worker from the same run, and the workers'
# CPU microseconds a job (not the server's; a shared host's load moves it least).
#
#   scripts/bench-store.sh [BUILD_DIR] [DOCS] [BATCH]
#
# DOCS x 10 pages x 2 questions jobs (default 100 -> 2,000 jobs); BATCH jobs per claim (default 4).
# The PostgreSQL server runs on this machine with fsync off: the numbers compare the queue's
# locking, not disks or networks (a remote server adds a round trip per statement).
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
bench_args 3 "$@"
cd "$(dirname "$0")/.."
build=${1:-build}
docs=${2:-100}
batch=${3:-4}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" --target bench_store -j "$(nproc)" >/dev/null
"$build/tests/store/bench_store" "$docs" "$batch"
