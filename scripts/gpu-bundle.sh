#!/usr/bin/env bash
# Packs what a device machine (a lent GPU box without this project's build libraries) needs to run
# the GPU checks and benchmarks from binaries built here: docqa, test_backend_cuda, bench_gpu and
# make_random_model (and, for the host CPU, test_gemm and bench_gemm), the shared libraries they load (except glibc's, libstdc++ and cuBLAS, which
# the CUDA image has in newer versions), the tiny models, fixtures-mini and the real configs.
#
#   scripts/gpu-bundle.sh            -> .gpu-shared/ (ignored; carry it), then on the device:
#   bash .gpu-shared/device-run.sh   (see that script)
#
# Everything is xz-compressed: the carry limit is 64 MiB with the working tree. The f32 variant
# of the a384 model is left out for size (12 MB), and out of fixtures-mini's index and cases.
# Works in any checkout or git worktree (.gpu-shared/ is in .gitignore); .gpu-shared/srcdir
# records this checkout's path for the device script. Environment: BUILD (default build-gpu),
# CUDA_ARCHS (default 90: H100 and H200), DOCQA_SHARED_DIR (default ../shared).
# The time a lent GPU session allows: scripts/gpu-device-run.sh --help.
set -euo pipefail
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      echo "gpu-bundle: unknown option '$arg'" >&2
      usage >&2
      exit 2
      ;;
  esac
done
[ $# -eq 0 ] || {
  echo "gpu-bundle: unexpected argument '$1' (it takes none)" >&2
  usage >&2
  exit 2
}
cd "$(dirname "$0")/.."
shared=${DOCQA_SHARED_DIR:-$PWD/../shared}
build=${BUILD:-build-gpu}
out=.gpu-shared
# configured every time: a build folder from before a new target knows no rule for it
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDOCQA_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" >/dev/null
cmake --build "$build" --target docqa test_backend_cuda bench_gpu make_random_model test_gemm \
  bench_gemm -j "$(nproc)" >/dev/null
rm -rf "$out" && mkdir -p "$out/stage/bin" "$out/stage/lib" "$out/stage/models/tiny-smolvlm-a384-v1tok"
# The tests open files of the source tree at the path compiled into them: the device script
# links that path to its checkout.
echo "$PWD" >"$out/srcdir"
bins=("$build/cli/docqa" "$build/tests/model/test_backend_cuda" "$build/tests/model/bench_gpu"
  "$build/tests/model/make_random_model" "$build/tests/model/test_gemm"
  "$build/tests/model/bench_gemm")
cp "${bins[@]}" "$out/stage/bin/"
ldd "${bins[@]}" | awk '/=> \//{print $3}' | sort -u |
  grep -v -E '/(libc|libm|libdl|libpthread|librt|libresolv|libgcc_s|libstdc\+\+|libcublas|libcublasLt)\.so' |
  xargs -I{} cp -L {} "$out/stage/lib/"
for m in tiny-smolvlm-b512 tiny-smolvlm-b512-bf16 tiny-smolvlm-a384-v1tok-bf16 SmolVLM-256M-Instruct \
  SmolVLM-Instruct-config; do
  cp -r "$shared/models/$m" "$out/stage/models/"
done
find "$shared/models/tiny-smolvlm-a384-v1tok" -maxdepth 1 -type f ! -name '*.safetensors' \
  -exec cp {} "$out/stage/models/tiny-smolvlm-a384-v1tok/" \;
mkdir -p "$out/stage/fixtures"
cp -r "$shared/conformance" "$shared/fixtures-mini" "$out/stage/"
cp -r "$shared/fixtures/images" "$out/stage/fixtures/"
# ~90 pages for the worker step (the first twelve PDFs of the corpus, ~1 MB)
mkdir -p "$out/stage/corpus"
find "$shared/corpus/pdf" -name '*.pdf' | sort | head -12 | xargs -I{} cp {} "$out/stage/corpus/"
# check.py takes its variants from each case.json, not from index.json: the variants whose
# weights stay behind (a384's f32) go from both, or check.py fails them for a missing
# model.safetensors. A bf16 twin's "same as variant X" fields (its input ids) are inlined first.
python3 - "$out/stage" <<'PY'
import json, os, sys
stage = sys.argv[1]
fx = os.path.join(stage, "fixtures-mini")
def has_weights(model_dir):
    d = os.path.join(stage, model_dir)
    return os.path.isdir(d) and any(f.endswith(".safetensors") for f in os.listdir(d))
p = os.path.join(fx, "index.json")
d = json.load(open(p))
d["variants_f32"] = [v for v in d["variants_f32"] if has_weights(os.path.join("models", v))]
json.dump(d, open(p, "w"), indent=1)
cases = os.path.join(fx, "cases")
for name in sorted(os.listdir(cases)) if os.path.isdir(cases) else []:
    cp = os.path.join(cases, name, "case.json")
    if not os.path.exists(cp):
        continue
    case = json.load(open(cp))
    variants = case.get("variants", {})
    gone = [v for v, body in variants.items() if not has_weights(body.get("model_dir", ""))]
    for v in gone:
        ref = "same as variant " + v
        for body in variants.values():
            for k, val in list(body.items()):
                if val == ref:
                    body[k] = variants[v][k]
    for v in gone:
        del variants[v]
    json.dump(case, open(cp, "w"), indent=1)
PY
tar cf - -C "$out/stage" . | xz -T0 -6 >"$out/bundle.tar.xz"
rm -rf "$out/stage"
cp scripts/gpu-device-run.sh "$out/device-run.sh"
du -sh "$out"
