#!/usr/bin/env bash
# The whole test suite, from a fresh machine: dependencies, build, every test.
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    skip the sanitizer build and the `slow` tests
#
# Steps: install-deps; format check; Release build with -Werror (and the CUDA sources when nvcc
# exists); ctest (all labels); ASan+UBSan build and ctest -L unit; the conformance check against
# ../shared/fixtures when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
quick=0
[ "${1:-}" = "--quick" ] && quick=1
jobs=$(nproc)

step() { printf '\n==== %s\n' "$*"; }

step "dependencies"
bash scripts/install-deps.sh

step "format (clang-format)"
bash scripts/format.sh --check

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
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure --no-tests=error -j "$jobs" -L unit)
fi

if [ -d ../shared/fixtures ] && build/cli/docqa generate --help >/dev/null 2>&1; then
  step "conformance against transformers' goldens"
  python3 ../shared/conformance/check.py build/cli/docqa ../shared/fixtures
  python3 ../shared/conformance/check.py build/cli/docqa ../shared/fixtures --bf16
fi
step "all tests passed"
