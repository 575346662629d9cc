#!/usr/bin/env bash
# scripts/gpu-bundle.sh and scripts/gpu-device-run.sh with stand-ins for the build, ldd, the GPU
# and the test binary: the bundle is made in a git worktree (where .git is a file), records
# the checkout's path and lists no conformance variant whose weights it leaves out; the device script, run from a copy of the checkout at another path (as on
# a lent machine), prints nvidia-smi first, links the recorded path to its copy, unpacks the
# bundle once and again when it changed, ends a test at TEST_TIMEOUT and skips what does not
# fit before DEADLINE.
#
#   test_gpu_scripts.sh SOURCE_DIR
set -euo pipefail
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
  echo "FAIL: $*"
  exit 1
}

# stand-ins, first on PATH
mkdir -p "$tmp/bin" "$tmp/libs" "$tmp/cublas"
cat >"$tmp/bin/cmake" <<'EOF'
#!/bin/sh
# configure: nothing; --build DIR ...: every bundled binary is the test binary's stand-in
[ "$1" = --build ] || exit 0
mkdir -p "$2/cli" "$2/tests/model"
for f in cli/docqa tests/model/test_backend_cuda tests/model/bench_gpu \
  tests/model/make_random_model tests/model/test_gemm tests/model/bench_gemm; do
  cp "$STUB_TEST" "$2/$f"
done
EOF
cat >"$tmp/stub_test" <<'EOF'
#!/bin/sh
# test_backend_cuda: -l lists three tests; -p T records T; /backend_cuda/hang never ends
case "$1" in
-l) printf '/backend_cuda/a\n/backend_cuda/hang\n/backend_cuda/b\n' ;;
-p)
  echo "$2" >>"$RAN"
  [ "$2" = /backend_cuda/hang ] && exec sleep 1000
  ;;
esac
exit 0
EOF
printf '#!/bin/sh\necho "libstub.so => %s/libs/libstub.so (0x0)"\n' "$tmp" >"$tmp/bin/ldd"
printf '#!/bin/sh\necho "nvidia-smi stand-in: GPU 0"\n' >"$tmp/bin/nvidia-smi"
chmod +x "$tmp/bin/"* "$tmp/stub_test"
: >"$tmp/libs/libstub.so"
export STUB_TEST=$tmp/stub_test RAN=$tmp/ran

# the shared folder's parts that the bundle takes
sh=$tmp/shared
for m in tiny-smolvlm-b512 tiny-smolvlm-b512-bf16 tiny-smolvlm-a384-v1tok-bf16 \
  SmolVLM-256M-Instruct SmolVLM-Instruct-config tiny-smolvlm-a384-v1tok; do
  mkdir -p "$sh/models/$m" && echo '{}' >"$sh/models/$m/config.json"
  echo weights >"$sh/models/$m/model.safetensors"
done
mkdir -p "$sh/conformance" "$sh/fixtures-mini/cases/page" "$sh/fixtures/images" "$sh/corpus/pdf"
echo 'print("check")' >"$sh/conformance/check.py"
echo '{"variants_f32": ["tiny-smolvlm-b512", "tiny-smolvlm-a384-v1tok"]}' >"$sh/fixtures-mini/index.json"
# check.py runs every variant a case.json lists; a bf16 twin takes its input ids from its f32 one
cat >"$sh/fixtures-mini/cases/page/case.json" <<'EOF2'
{"variants": {
 "tiny-smolvlm-b512": {"model_dir": "models/tiny-smolvlm-b512", "input_ids": [1, 2]},
 "tiny-smolvlm-a384-v1tok": {"model_dir": "models/tiny-smolvlm-a384-v1tok", "input_ids": [1, 3]},
 "tiny-smolvlm-a384-v1tok-bf16": {"model_dir": "models/tiny-smolvlm-a384-v1tok-bf16",
  "input_ids": "same as variant tiny-smolvlm-a384-v1tok"}}}
EOF2
echo png >"$sh/fixtures/images/page.png"
echo pdf >"$sh/corpus/pdf/a.pdf"

# a repository with the scripts, and a worktree of it where the bundle is made
repo=$tmp/repo wt=$tmp/wt
mkdir -p "$repo/scripts"
cp "$src/scripts/gpu-bundle.sh" "$src/scripts/gpu-device-run.sh" "$repo/scripts/"
cp "$src/.gitignore" "$repo/"
git -C "$repo" init -q
git -C "$repo" add .
git -C "$repo" -c user.name=test -c user.email=test@localhost commit -qm scripts
git -C "$repo" worktree add -q "$wt"
[ -f "$wt/.git" ] || fail "the worktree's .git is not a file"

rc=0
(cd "$wt" && PATH="$tmp/bin:$PATH" DOCQA_SHARED_DIR=$sh bash scripts/gpu-bundle.sh) \
  >"$tmp/bundle.log" 2>&1 || rc=$?
[ "$rc" = 0 ] || {
  cat "$tmp/bundle.log"
  fail "gpu-bundle.sh in a git worktree: exit $rc"
}
[ -s "$wt/.gpu-shared/bundle.tar.xz" ] || fail "no bundle.tar.xz"
[ "$(cat "$wt/.gpu-shared/srcdir")" = "$wt" ] || fail "srcdir is '$(cat "$wt/.gpu-shared/srcdir")', not $wt"
[ -z "$(git -C "$wt" status --porcelain)" ] || fail "the bundle shows in git status: $(git -C "$wt" status --porcelain)"
# a384's f32 weights stay behind: its variant goes from index.json and from the case, whose bf16
# twin keeps the ids it referred to (else check.py fails the variant for a missing model)
mkdir -p "$tmp/look" && xz -dc "$wt/.gpu-shared/bundle.tar.xz" | tar xf - -C "$tmp/look"
[ ! -e "$tmp/look/models/tiny-smolvlm-a384-v1tok/model.safetensors" ] || fail "a384's f32 weights are in the bundle"
python3 - "$tmp/look/fixtures-mini" <<'EOF2' || fail "the bundle's fixtures-mini lists a variant it has no weights for"
import json, sys
fx = sys.argv[1]
assert json.load(open(fx + "/index.json"))["variants_f32"] == ["tiny-smolvlm-b512"]
v = json.load(open(fx + "/cases/page/case.json"))["variants"]
assert sorted(v) == ["tiny-smolvlm-a384-v1tok-bf16", "tiny-smolvlm-b512"], sorted(v)
assert v["tiny-smolvlm-a384-v1tok-bf16"]["input_ids"] == [1, 3], v
EOF2

# the device's copy of the checkout, at another path; the build's path is gone there
dev=$tmp/device/checkout
mkdir -p "$tmp/device"
cp -r "$wt" "$dev"
git -C "$repo" worktree remove --force "$wt"
[ ! -e "$wt" ] || fail "the worktree is still there"

device() { # device LOG [VAR=value ...] -- STEP...
  local log=$1
  shift
  local vars=()
  while [ "$1" != -- ]; do
    vars+=("$1")
    shift
  done
  shift
  : >"$RAN"
  local rc=0
  env PATH="$tmp/bin:$PATH" OUT="$tmp/out" UNPACK_DIR="$tmp/gb" CUBLAS_DIR="$tmp/cublas" \
    CHECK_CONFIGS=none "${vars[@]}" bash "$dev/.gpu-shared/device-run.sh" "$@" >"$log" 2>&1 ||
    rc=$?
  [ "$rc" = 0 ] || {
    cat "$log"
    fail "device-run.sh $*: exit $rc"
  }
}

# 1. a test that hangs is ended at TEST_TIMEOUT and the rest still run; the build's path now
#    leads to the device's checkout; nvidia-smi comes first
device "$tmp/run1.log" TEST_TIMEOUT=1 -- check
head -1 "$tmp/run1.log" | grep -q 'nvidia-smi stand-in' || fail "nvidia-smi is not printed first"
grep -Eq '^/backend_cuda/hang +rc=124' "$tmp/run1.log" || {
  cat "$tmp/run1.log"
  fail "the hanging test was not ended at TEST_TIMEOUT"
}
for t in /backend_cuda/a /backend_cuda/b /backend_cuda/graph_forward; do
  grep -qx "$t" "$RAN" || fail "$t did not run: $(tr '\n' ' ' <"$RAN")"
done
[ "$(readlink "$wt")" = "$dev" ] || fail "$wt does not lead to $dev"
[ -s "$tmp/gb/.sum" ] || fail "no checksum of the unpacked bundle"

# 2. the same bundle again: not unpacked again
touch "$tmp/gb/kept"
device "$tmp/run2.log" TEST_TIMEOUT=1 -- check
[ -e "$tmp/gb/kept" ] || fail "the same bundle was unpacked again"
! grep -q 'unpacking it again' "$tmp/run2.log" || fail "said it unpacked the same bundle again"

# 3. a rebuilt bundle carried to the same machine: unpacked again
mkdir -p "$tmp/re" && xz -dc "$dev/.gpu-shared/bundle.tar.xz" | tar xf - -C "$tmp/re"
echo rebuilt >"$tmp/re/bin/rebuilt"
tar cf - -C "$tmp/re" . | xz >"$dev/.gpu-shared/bundle.tar.xz"
device "$tmp/run3.log" TEST_TIMEOUT=1 -- check
grep -q 'unpacking it again' "$tmp/run3.log" || fail "a changed bundle was not unpacked again"
[ ! -e "$tmp/gb/kept" ] && [ -e "$tmp/gb/bin/rebuilt" ] || fail "the changed bundle is not what is unpacked"

# 4. DEADLINE inside the test loop: the hanging test's 60 s are cut to what is left of 3 s, and
#    nothing after it starts (whatever the machine's speed, /backend_cuda/b comes after it)
device "$tmp/run4.log" DEADLINE=3 TEST_TIMEOUT=60 -- check bench256
! grep -qx /backend_cuda/b "$RAN" || fail "/backend_cuda/b ran past DEADLINE"
grep -q 'skipping /backend_cuda/b: past DEADLINE=3 s' "$tmp/run4.log" || {
  cat "$tmp/run4.log"
  fail "no word of skipping /backend_cuda/b"
}
grep -q 'skipping bench256: past DEADLINE=3 s' "$tmp/run4.log" || fail "bench256 was not skipped"
echo "gpu-bundle.sh in a worktree, device-run.sh's source link, unpacking and time limits: ok"
