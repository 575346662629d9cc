#!/usr/bin/env bash
# Everything that needs a GPU, in one short run (a few minutes: a device session has 15 minutes
# of GPU time in all): test_backend_cuda and ../shared/conformance/check.py over the fixtures
# with `docqa generate --device cuda:$GPU`, without and with CUDA graphs.
#
#   scripts/check-gpu.sh [FIXTURES_DIR]        (default $DOCQA_SHARED_DIR/fixtures-mini)
#
# Environment: GPU (default 0), BUILD (default build-gpu), CUDA_ARCHS (below), DOCQA_SHARED_DIR
# (default ../shared).
#
# Steps, each timed:
#   1. build docqa and test_backend_cuda (CUDA for this GPU only: CUDA_ARCHS, default native);
#   2. test_backend_cuda: every op against the CPU, the tiny models, and the decode step as a
#      CUDA graph giving the tokens and logits of plain launches bit for bit;
#   3. its graph tests again with float32 products (DOCQA_CUDA_F32=1: cuBLAS inside the capture);
#   4. check.py, float32 products (DOCQA_CUDA_F32=1) on the float32 and the bf16 model variants,
#      which must pass check.py's float32 tolerances; then the float32 variants again with
#      DOCQA_CUDA_GRAPHS=1 (must pass too);
#   5. the default bf16 products on the bf16 variants, without and with graphs, under the bf16
#      tolerances (scripts/check-approx.py: logits within 0.25, cosine >= 0.9998; check.py's own
#      5e-4 is for float32 and ~500x below what rounding activations to bf16 does to logits of
#      ~12).
# Exit status: 1 when a test or a check.py run failed; 2 (at once) without a GPU or
# without the build's libraries.
#
# On a GPU machine that has this project's build libraries (scripts/install-deps.sh) and
# ../shared, run it as it is. A lent device machine has neither: there, use
# scripts/gpu-bundle.sh here (binaries built here, their libraries and the test data, ~44 MB
# compressed) and `bash .gpu-shared/device-run.sh check ...` there (carry: .gpu-shared), which
# runs the same tests and, within a session's time, two of the check.py runs by default (all
# six with CHECK_CONFIGS; scripts/gpu-device-run.sh --help: DEADLINE and the plan). As of
# 2026-11-26 on an H200 all passed.
set -euo pipefail
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      echo "check-gpu: unknown option '$arg'" >&2
      usage >&2
      exit 2
      ;;
  esac
done
[ $# -le 1 ] || {
  echo "check-gpu: at most 1 argument, got $#" >&2
  usage >&2
  exit 2
}
cd "$(dirname "$0")/.."
build=${BUILD:-build-gpu}
shared=${DOCQA_SHARED_DIR:-$PWD/../shared}
export DOCQA_SHARED_DIR=$shared # the tests find the tiny models there
fixtures=${1:-$shared/fixtures-mini}
gpu=${GPU:-0}
die() { echo "check-gpu: $*" >&2; exit 2; }
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 ||
  die "no NVIDIA GPU here (nvidia-smi missing or sees none): run this on a GPU machine"
[ -f "$shared/conformance/check.py" ] || die "$shared/conformance/check.py not found"
[ -d "$shared/models/tiny-smolvlm-b512" ] || die "$shared/models/tiny-smolvlm-b512 not found"
export PATH=$PATH:/usr/local/cuda/bin
# The build's libraries (scripts/install-deps.sh): name what is missing before building.
missing=()
for m in glib-2.0 gio-2.0 json-glib-1.0 libpcre2-8 poppler-glib cairo libtiff-4 sqlite3 libpng16 \
  libjpeg openblas; do
  pkg-config --exists "$m" 2>/dev/null || missing+=("$m")
done
[ ${#missing[@]} -eq 0 ] ||
  die "the build needs these pkg-config modules, missing here: ${missing[*]} (scripts/install-deps.sh)"
status=0
t0=$SECONDS
step() { printf '\n## %s  [%ds]\n' "$*" $((SECONDS - t0)); }

step "build ($build)"
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDOCQA_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-native}" >/dev/null
fi
cmake --build "$build" --target docqa test_backend_cuda -j "$(nproc)" >/dev/null
nvidia-smi -L

step "test_backend_cuda (ops, tiny models, decode as a CUDA graph vs plain)"
"$build/tests/model/test_backend_cuda" --verbose || status=1
step "test_backend_cuda graph tests, float32 products (cuBLAS captured)"
DOCQA_CUDA_F32=1 "$build/tests/model/test_backend_cuda" --verbose -p /backend_cuda/graph_forward \
  -p /backend_cuda/graph_generator || status=1

wrapper=$(mktemp -d)/docqa-cuda
trap 'rm -rf "$(dirname "$wrapper")"' EXIT
printf '#!/bin/sh\nexec "%s" "$@" --device cuda:%s\n' "$PWD/$build/cli/docqa" "$gpu" >"$wrapper"
chmod +x "$wrapper"
step "check.py: float32 products, float32 variants"
DOCQA_CUDA_F32=1 python3 "$shared/conformance/check.py" "$wrapper" "$fixtures" || status=1
step "check.py: float32 products, bf16 variants"
DOCQA_CUDA_F32=1 python3 "$shared/conformance/check.py" "$wrapper" "$fixtures" --bf16 || status=1
step "check.py: float32 products, float32 variants, CUDA graphs on"
DOCQA_CUDA_GRAPHS=1 DOCQA_CUDA_F32=1 python3 "$shared/conformance/check.py" "$wrapper" \
  "$fixtures" || status=1
step "check.py: bf16 products (default), bf16 variants, bf16 tolerances"
python3 scripts/check-approx.py bf16 "$wrapper" "$fixtures" --bf16 || status=1
step "check.py: bf16 products, bf16 variants, CUDA graphs on, bf16 tolerances"
DOCQA_CUDA_GRAPHS=1 python3 scripts/check-approx.py bf16 "$wrapper" "$fixtures" --bf16 || status=1
step "done: exit $status"
exit $status
