#!/usr/bin/env bash
# Static analysis of every C source the build compiles: cppcheck, clang-tidy (the checks in
# .clang-tidy, tests/.clang-tidy) and gcc's -fanalyzer. Exits 1 on any finding, 2 when a tool is
# missing; prints how long each took. It takes minutes: scripts/test.sh (CI) runs only --quick.
#
#   scripts/lint.sh            all three, over the libraries, the CLI and the tests
#   scripts/lint.sh --quick    cppcheck only (about half a minute on 2 cores)
#
# Tools: Debian's cppcheck (2.10), clang-tidy (14) and gcc (12), which scripts/install-deps.sh
# installs. Build folders: build-lint (configured only, for compile_commands.json) and
# build-lint-analyzer (-fanalyzer, any warning a finding; the libraries and the docqa binary, not
# the tests, which cppcheck and clang-tidy cover). A false positive is silenced at its line with
# the reason (`// cppcheck-suppress id -- why`, `// NOLINT(check): why`), or below.
set -euo pipefail
cd "$(dirname "$0")/.."
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
    echo "lint: unknown arguments '$*'" >&2
    usage >&2
    exit 2
    ;;
esac
tools=(cppcheck)
[ $quick -eq 1 ] || tools+=(clang-tidy gcc)
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null || {
    echo "lint: $t is not installed (scripts/install-deps.sh installs it)" >&2
    exit 2
  }
done
jobs=$(nproc)
start=$SECONDS
failed=()
step() { printf '\n==== %s\n' "$*"; }
took() { echo "lint: $1: $(($SECONDS - $2)) s"; }

# compile_commands.json of the configured build, less the generated sources (build-lint/...).
cmake -S . -B build-lint -DCMAKE_BUILD_TYPE=Debug -DDOCQA_CUDA=OFF -DDOCQA_WERROR=ON \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
mkdir -p build-lint/sources
python3 - "$PWD" <<'EOF'
import json, sys
root = sys.argv[1]
cc = json.load(open("build-lint/compile_commands.json"))
cc = [e for e in cc if not e["file"].startswith(root + "/build")]
json.dump(cc, open("build-lint/sources/compile_commands.json", "w"), indent=1)
EOF

step "cppcheck"
t=$SECONDS
# Left out everywhere: varFuncNullUB (GLib's NULL-terminated varargs, G_GNUC_NULL_TERMINATED; NULL
# is a pointer on every platform docqa builds for), invalidPointerCast (the kernels' scratch
# buffers are bytes carved into float, bf16 and int8 regions), readdirCalled (readdir_r is
# deprecated; glibc's readdir is safe per stream). In the tests only: doubleFree (cppcheck misses
# that dq_test_docqa(&out, ...) sets out again after it was freed), assertWithSideEffect and
# assignmentInAssert (the tests never define G_DISABLE_ASSERT; g_assert(call()) is their idiom).
if ! cppcheck --project=build-lint/sources/compile_commands.json --quiet --inline-suppr \
  --enable=warning,performance,portability --error-exitcode=1 -j "$jobs" \
  --library=gtk --library=posix --library=sqlite3 --library=cairo --library=openmp \
  --library=scripts/lint/glib.cfg \
  --suppress=varFuncNullUB --suppress=invalidPointerCast --suppress=readdirCalled \
  --suppress='doubleFree:*tests/*' --suppress='assertWithSideEffect:*tests/*' \
  --suppress='assignmentInAssert:*tests/*' \
  --template='{file}:{line}: {severity}: {message} [{id}]'; then
  failed+=(cppcheck)
fi
took cppcheck $t

if [ $quick -eq 0 ]; then
  step "clang-tidy"
  t=$SECONDS
  # WarningsAsErrors in .clang-tidy: a finding makes clang-tidy, and so xargs, fail.
  if ! python3 -c 'import json, sys; print("\n".join(e["file"] for e in json.load(sys.stdin)))' \
    <build-lint/sources/compile_commands.json |
    xargs -P "$jobs" -n 4 clang-tidy -p build-lint/sources --quiet >build-lint/clang-tidy.log \
      2>build-lint/clang-tidy.err; then
    cat build-lint/clang-tidy.log
    grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$' build-lint/clang-tidy.err || :
    failed+=(clang-tidy)
  fi
  took clang-tidy $t

  step "gcc -fanalyzer"
  t=$SECONDS
  cmake -S . -B build-lint-analyzer -DCMAKE_BUILD_TYPE=Debug -DDOCQA_CUDA=OFF -DDOCQA_WERROR=OFF \
    -DCMAKE_C_FLAGS="-fanalyzer" >/dev/null
  # Rebuilt whole each time: an object left from a clean run would hide its findings.
  cmake --build build-lint-analyzer --target clean >/dev/null
  if ! cmake --build build-lint-analyzer -j "$jobs" --target docqa docqa_common docqa_image \
    docqa_ingest docqa_jobs docqa_model docqa_store >build-lint/analyzer.log 2>&1 ||
    grep -q -E 'warning:|error:' build-lint/analyzer.log; then
    grep -v -E '^\[ *[0-9]+%\]' build-lint/analyzer.log
    failed+=("gcc -fanalyzer")
  fi
  took "gcc -fanalyzer" $t
fi

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: findings from: ${failed[*]} ($((SECONDS - start)) s)"
  exit 1
fi
echo "lint: no findings ($((SECONDS - start)) s)"
