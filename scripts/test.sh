#!/usr/bin/env bash
# The whole test suite, from a fresh machine: dependencies, build, every test.
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    skip the sanitizer build and the `slow` tests
#
# Steps: install-deps; format check; cppcheck (scripts/lint.sh --quick); Release build with
# -Werror (and the CUDA sources when nvcc exists); ctest (all labels); ASan+UBSan build, ctest
# -L unit on it, then ctest -L asan on it (the slow tests over the real-world corpus, the whole
# pipeline, PostgreSQL crash recovery and the fixture sweeps; ~3 min on 2 cores), library
# caches' leaks suppressed by tests/lsan.supp; libFuzzer smoke (DOCQA_FUZZ_SECONDS a target,
# default 20); the conformance check against ../shared/fixtures when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
quick=0
case "$#:${1:-}" in
  0:) ;;
  1:--quick) quick=1 ;;
  1:-h | 1:--help)
    usage
    exit 0
    ;;
  *)
    echo "test: unknown arguments '$*'" >&2
    usage >&2
    exit 2
    ;;
esac
jobs=$(nproc)

step() { printf '\n==== %s\n' "$*"; }

step "dependencies"
bash scripts/install-deps.sh

step "format (clang-format)"
bash scripts/format.sh --check

step "static analysis (cppcheck; scripts/lint.sh without --quick adds clang-tidy and -fanalyzer)"
bash scripts/lint.sh --quick

step "release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DDOCQA_WERROR=ON >/dev/null
cmake --build build -j "$jobs"

step "tests"
ctest_args=(--output-on-failure --no-tests=error -j "$jobs")
[ $quick -eq 1 ] && ctest_args+=(-LE slow)
(cd build && ctest "${ctest_args[@]}")

if [ $quick -eq 0 ]; then
  step "sanitizer build (ASan + UBSan) and unit tests"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DDOCQA_SANITIZE=ON -DDOCQA_CUDA=OFF \
    -DDOCQA_WERROR=ON >/dev/null
  cmake --build build-asan -j "$jobs"
  sanitized=(env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0)
  (cd build-asan && "${sanitized[@]}" ctest --output-on-failure --no-tests=error -j "$jobs" -L unit)
  step "sanitizer run of the slow tests labelled asan (real-world documents, the whole pipeline)"
  (cd build-asan && "${sanitized[@]}" ctest --output-on-failure --no-tests=error -j "$jobs" -L asan)
fi

if [ $quick -eq 0 ] && [ -f tests/fuzz/CMakeLists.txt ]; then
  step "fuzz smoke (libFuzzer, ${DOCQA_FUZZ_SECONDS:-20} s per target)"
  CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DDOCQA_FUZZ=ON -DDOCQA_CUDA=OFF \
    -DDOCQA_WERROR=ON >/dev/null
  cmake --build build-fuzz -j "$jobs"
  for f in build-fuzz/tests/fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f")
    seeds=tests/fuzz/seeds/${name#fuzz_}
    work=$(mktemp -d)
    [ -d "$seeds" ] && cp -r "$seeds"/. "$work"/
    dict=()
    [ -f "tests/fuzz/${name#fuzz_}.dict" ] && dict=(-dict="tests/fuzz/${name#fuzz_}.dict")
    # libFuzzer exits non-zero and writes the failing input under artifact_prefix on a finding;
    # UBSan's reports count as findings too (by default it reports and goes on).
    if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "$f" "${dict[@]}" -max_total_time="${DOCQA_FUZZ_SECONDS:-20}" -print_final_stats=1 \
         -artifact_prefix="$work/" "$work" >"$work.log" 2>&1; then
      tail -n 40 "$work.log"
      echo "fuzzer $name failed; its input is in $work"
      exit 1
    fi
    echo "$name: $(grep -Eo 'number_of_executed_units: *[0-9]+' "$work.log" | grep -Eo '[0-9]+$') inputs, no findings"
    rm -rf "$work" "$work.log"
  done
fi

if [ -d ../shared/fixtures ] && build/cli/docqa generate --help >/dev/null 2>&1; then
  step "conformance against transformers' goldens"
  python3 ../shared/conformance/check.py build/cli/docqa ../shared/fixtures
  python3 ../shared/conformance/check.py build/cli/docqa ../shared/fixtures --bf16
  step "conformance with speculative decoding (--draft int8, guessing at every step): the same"
  draft=$(mktemp -d)
  printf '#!/bin/sh\nDOCQA_DRAFT_ADAPT=0 exec "%s" "$@" --draft int8\n' "$PWD/build/cli/docqa" \
    > "$draft/docqa"
  chmod +x "$draft/docqa"
  python3 ../shared/conformance/check.py "$draft/docqa" ../shared/fixtures
  python3 ../shared/conformance/check.py "$draft/docqa" ../shared/fixtures --bf16
  rm -rf "$draft"
  step "conformance of the approximate modes (--weights bf16, --weights int8), their tolerances"
  python3 scripts/check-approx.py bf16 build/cli/docqa ../shared/fixtures --args "--weights bf16"
  python3 scripts/check-approx.py int8 build/cli/docqa ../shared/fixtures --args "--weights int8"
fi
step "all tests passed"
