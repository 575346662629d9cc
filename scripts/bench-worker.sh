#!/usr/bin/env bash
# Worker throughput with the model: examples/docs ingested once, QUESTIONS questions a page, then
# `docqa run --workers 1 --until-empty` at --batch 1 and --batch B on copies of the same queue;
# jobs/s and the ratio to the first row, in this one invocation, and beside them each run's CPU
# seconds (its processes') and jobs per CPU second, which a shared host's load moves least. With
# REF_DOCQA (another docqa binary, e.g. an older build) its rows come first and are the
# reference; both run under docqa's OpenMP settings (GOMP_SPINCOUNT=300 unless
# OMP_WAIT_POLICY or GOMP_SPINCOUNT is set), whatever an older binary's default was.
#
#   scripts/bench-worker.sh [BUILD_DIR] [MODEL_DIR] [BATCH] [QUESTIONS] [MAX_NEW_TOKENS]
#   REF_DOCQA=/path/to/old/docqa scripts/bench-worker.sh build
#   DOCS=../shared/corpus/pdf N_RES=5 PREP="1 2" scripts/bench-worker.sh build "" 8 1 4
#
# PREP: more rows at --batch BATCH, one a --prep-threads count: with the tiny model and pages at
# N=5 the host's page preparation is the bottleneck, as it is for a GPU worker. DOCS: the folder
# to ingest (default examples/docs, 5 pages).
#
# PREFIX=1: each row twice, the workers' prefix cache off (DOCQA_PREFIX_CACHE_MB=0) and on (the
# default), off first: a page's later questions prefill only what follows their shared prefix.
# REPEAT=R: every row R times (on a shared machine the CPU seconds are what repeats).
#
#   PREFIX=1 REPEAT=2 DOCS=/tmp/two-pages N_RES=5 scripts/bench-worker.sh build /tmp/256m 1 5 32
#
# Columns: wall seconds, CPU seconds (user + system of `docqa run` and its workers; OpenMP
# threads spin only GOMP_SPINCOUNT=300 times before they sleep, so spinning adds little), jobs/s and its ratio to the first row's, cpu_x: the first row's CPU seconds over
# this row's (above 1: less CPU for the same jobs), and whether the answers are the first row's.
#
# MODEL_DIR defaults to ../shared/models/tiny-smolvlm-b512 (random weights: meaningless answers,
# which always run to MAX_NEW_TOKENS; real models stop earlier, at different lengths, which is
# where continuous batching gains most). Pages at --n-res 2 to keep the tiny model's run short.
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
bench_args 5 "$@"
cd "$(dirname "$0")/.."
build=${1:-build}
model=${2:-../shared/models/tiny-smolvlm-b512}
[ -n "$model" ] || model=../shared/models/tiny-smolvlm-b512
batch=${3:-4}
questions=${4:-4}
max_new=${5:-24}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" --target docqa -j "$(nproc)" >/dev/null
docqa=$PWD/$build/cli/docqa
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$docqa" ingest --db "$tmp/base.db" --n-res "${N_RES:-2}" --model "$model" "${DOCS:-examples/docs}" \
  >/dev/null
qs=()
for i in $(seq 1 "$questions"); do qs+=("Question number $i: what does the page say?"); done
"$docqa" ask --db "$tmp/base.db" --model "$model" --max-new-tokens "$max_new" "${qs[@]}" >/dev/null
jobs=$(sqlite3 "$tmp/base.db" "SELECT count(*) FROM jobs")
echo "model $(basename "$model"), $jobs jobs (pages x $questions questions), max_new_tokens $max_new"

bench_threading
first="" first_cpu="" first_answers=""
run_once() { # label binary batch prep_threads prefix_cache_mb ('': the default)
  local db=$tmp/run.db
  rm -rf "$db" "$db-wal" "$db-shm" "$db.pages"
  sqlite3 "$tmp/base.db" ".backup '$db'"
  ln -s "$tmp/base.db.pages" "$db.pages"
  local s cpu rate answers
  local prep=() env=()
  [ -z "$4" ] || prep=(--prep-threads "$4")
  [ -z "$5" ] || env=(DOCQA_PREFIX_CACHE_MB="$5")
  bench_timed "$tmp/time" env "${env[@]}" "$2" run --db "$db" --model "$model" --batch "$3" \
    --workers 1 "${prep[@]}" --until-empty --quiet >/dev/null 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; exit 1; }
  read -r s cpu <"$tmp/time"
  rate=$(echo "$jobs / $s" | bc -l)
  answers=$(sqlite3 "$db" "SELECT job_id, text FROM answers ORDER BY job_id" | sha256sum)
  [ -n "$first" ] || { first=$rate; first_cpu=$cpu; first_answers=$answers; }
  printf '%-10s %6d %5s %9.2f %9.2f %9.2f %7.2f %7.2f  %s\n' "$1" "$3" "${4:-1}" "$s" "$cpu" \
    "$rate" "$(echo "$rate / $first" | bc -l)" "$(echo "$first_cpu / $cpu" | bc -l)" \
    "$([ "$answers" = "$first_answers" ] && echo same || echo DIFFERENT)"
}
run() { # label binary batch [prep_threads]
  local r
  for r in $(seq 1 "${REPEAT:-1}"); do
    if [ "${PREFIX:-0}" = 1 ]; then
      run_once "$1-off" "$2" "$3" "${4:-}" 0
      run_once "$1-on" "$2" "$3" "${4:-}" ""
    else
      run_once "$1" "$2" "$3" "${4:-}" ""
    fi
  done
}
printf '%-10s %6s %5s %9s %9s %9s %7s %7s  %s\n' binary batch prep seconds cpu_s jobs/s ratio cpu_x \
  answers
if [ -n "${REF_DOCQA:-}" ]; then
  run ref "$REF_DOCQA" 1
  run ref "$REF_DOCQA" "$batch"
fi
run this "$docqa" 1
run this "$docqa" "$batch"
for t in ${PREP:-}; do
  run this "$docqa" "$batch" "$t"
done
