#!/usr/bin/env bash
# A random-weight SmolVLM snapshot with the real dimensions, for benchmarks (never committed).
#
#   scripts/make-random-model.sh 256m|2.2b OUT_DIR [f32|bf16] [seed]
#
# 256m: the authentic SmolVLM-256M-Instruct config and tokenizer (../shared/models); ~1 GB f32.
# 2.2b: the reconstructed SmolVLM-Instruct config with the a384 tokenizer; ~9 GB f32, 4.5 GB bf16.
# Builds the generator (tests/model/make_random_model.c) in $BUILD (default build).
set -euo pipefail
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      echo "make-random-model: unknown option '$arg'" >&2
      usage >&2
      exit 2
      ;;
  esac
done
[ $# -le 4 ] || {
  echo "make-random-model: at most 4 arguments, got $#" >&2
  usage >&2
  exit 2
}
cd "$(dirname "$0")/.."
build=${BUILD:-build}
models=${DOCQA_SHARED_DIR:-$PWD/../shared}/models
[ $# -ge 2 ] || {
  echo "make-random-model: give the size and OUT_DIR" >&2
  usage >&2
  exit 2
}
case "$1" in
  256m) src=$models/SmolVLM-256M-Instruct; tok=$models/SmolVLM-256M-Instruct ;;
  2.2b) src=$models/SmolVLM-Instruct-config; tok=$models/tiny-smolvlm-a384-v1tok ;;
  *) echo "make-random-model: model must be 256m or 2.2b" >&2; exit 2 ;;
esac
[ -d "$src" ] || { echo "make-random-model: $src not found" >&2; exit 2; }
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" --target make_random_model -j 2 >/dev/null
"$build/tests/model/make_random_model" "$src" "$tok" "$2" "${3:-f32}" "${4:-0}"
