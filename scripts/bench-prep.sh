#!/usr/bin/env bash
# Page preparation speed: what a worker's preparing threads do with a page (decode, Idefics3
# image processor at N=5, the DocVQA prompt tokenized) in docqa, against transformers'
# Idefics3Processor (load_image + processor) on the same pages in the same run. Prints each
# side's pages/s and the ratio: docqa on one thread against transformers in one process, then
# docqa on every core (a GPU worker prepares on up to 8 threads while the GPU works).
#
#   scripts/bench-prep.sh          (BUILD=build, PAGES=32 corpus pages, REPEATS=2)
#
# The pages are ../shared/corpus's PDFs rendered at N=5 by `docqa ingest` once into PAGES_DIR
# (/tmp/docqa-bench-pages, shared with bench-gpu.sh); the tokenizer and processor settings come
# from a random 256M snapshot ($MODELS, made once). transformers runs in the throw-away
# virtualenv bench-model.sh uses ($VENV, default /tmp/docqa-bench-venv; created from PyPI if
# missing). Every run is under docqa's OpenMP settings (GOMP_SPINCOUNT=300 unless
# OMP_WAIT_POLICY or GOMP_SPINCOUNT is set), the one-thread runs with OMP_NUM_THREADS=1; beside
# pages/s each side's CPU seconds a pass and the ratio of those, which a shared host's load
# moves least.
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
bench_args 0 "$@"
cd "$(dirname "$0")/.."
build=${BUILD:-build}
shared=${DOCQA_SHARED_DIR:-$PWD/../shared}
models=${MODELS:-/tmp/docqa-random-models}
venv=${VENV:-/tmp/docqa-bench-venv}
pages_dir=${PAGES_DIR:-/tmp/docqa-bench-pages}
n_pages=${PAGES:-32}
repeats=${REPEATS:-2}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" --target bench_prep make_random_model docqa -j 2 >/dev/null
. scripts/bench-lib.sh
bench_venv "$venv"
snap=$models/smolvlm-256m-random-bf16
[ -f "$snap/model.safetensors" ] || BUILD=$build scripts/make-random-model.sh 256m "$snap" bf16 >&2
bench_corpus_pages "$build/cli/docqa" "$shared" "$pages_dir" 5
bench_threading
mapfile -t pages < <(head -n "$n_pages" "$pages_dir/list")
[ ${#pages[@]} -gt 0 ] || { echo "bench-prep: no pages in $pages_dir/list" >&2; exit 2; }
echo "# ${#pages[@]} corpus pages at N=5, best of $repeats passes after a warm-up; $(nproc) cores"
one=$(OMP_NUM_THREADS=1 "$build/tests/model/bench_prep" "$snap" 5 1 "$repeats" "${pages[@]}")
all=$("$build/tests/model/bench_prep" "$snap" 5 "$(nproc)" "$repeats" "${pages[@]}")
hf=$(OMP_NUM_THREADS=1 "$venv/bin/python" scripts/bench_prep_hf.py "$snap" 5 "$repeats" "${pages[@]}" 2>/dev/null)
printf '%s\n%s\n%s\n' "$one" "$all" "$hf"
rate() { sed -E 's/.*pages_per_s=([0-9.]+).*/\1/' <<<"$1"; }
cpu() { sed -E 's/.*cpu_seconds=([0-9.]+).*/\1/' <<<"$1"; }
tiles() { sed -E 's/.*tiles=([0-9]+).*/\1/' <<<"$1"; }
[ "$(tiles "$one")" = "$(tiles "$hf")" ] || echo "bench-prep: the two sides made different tile counts" >&2
awk -v d1="$(rate "$one")" -v dn="$(rate "$all")" -v h="$(rate "$hf")" -v n="$(nproc)" \
  -v c1="$(cpu "$one")" -v cn="$(cpu "$all")" -v ch="$(cpu "$hf")" 'BEGIN {
  printf "docqa %.2f pages/s on one thread, transformers %.2f in one process: %.2fx; docqa on %d threads %.2f pages/s\n", d1, h, d1 / h, n, dn
  printf "CPU seconds a pass: docqa %.2f on one thread, transformers %.2f: %.2fx; docqa on %d threads %.2f\n", c1, ch, ch / c1, n, cn }'
