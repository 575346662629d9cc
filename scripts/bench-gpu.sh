#!/usr/bin/env bash
# Pages/s on one GPU at N=5: docqa's CUDA backend against transformers (torch bf16, sdpa) on the
# same GPU, the same pages, the same prompt and the same number of generated tokens, in one
# invocation, for the SmolVLM-256M and SmolVLM-Instruct (2.2B) dimensions with random weights.
#
#   scripts/bench-gpu.sh [256m] [2.2b]          (default: both)
#
# Environment: GPU (default 0), BATCHES (default 1,2,4,8,16,32,64), N_RES (5), MAX_NEW (16
# tokens, ignore_eos on both sides), PAGES (space-separated page images; default: up to 64
# distinct pages of ../shared/corpus's PDFs, rendered at N=5 by `docqa ingest` once into
# PAGES_DIR, /tmp/docqa-bench-pages, topped up to 64 with mirrored copies; PAGES=fixtures: the four fixture page images cycled, as
# before 2026-11-26, whose repeated tiles docqa encodes once and transformers every time),
# BUILD (default build-gpu, configured with -DDOCQA_CUDA=ON), MODELS (random snapshots, default
# /tmp/docqa-random-models; generated once, bf16), GRAPHS (1: docqa also with DOCQA_CUDA_GRAPHS=1,
# the decode step as a CUDA graph, as the row docqa_graphs; 0: not).
# Prints each side's line per batch size, then each side's best pages/s and the ratio
# docqa / transformers (the target is >= 3x). docqa_host lines: docqa's host work alone, the
# same batches through bench_gpu's "host" backend, whose ops do no arithmetic (no GPU needed:
# `bench_gpu SNAPSHOT host ...` runs anywhere). docqa's lines give each stage's host CPU time
# (*_cpu_ms) beside its wall time; both sides run under docqa's OpenMP settings
# (GOMP_SPINCOUNT=300 unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set).
#
# Runs only on a machine with an NVIDIA GPU, nvcc, and python3 with torch (CUDA) and
# transformers; anywhere else it stops at once saying what is missing (exit 2).
# It builds, then runs both models at every batch size on both sides: far more than a lent
# device session allows (10 minutes a command, 15 minutes in all). There, build the bundle here
# (scripts/gpu-bundle.sh) and run `bash .gpu-shared/device-run.sh bench256 hf256` on the device
# (its --help has the session's plan).
set -euo pipefail
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    256m | 2.2b) ;;
    *)
      echo "bench-gpu: unknown argument '$arg' (the models are 256m and 2.2b)" >&2
      usage >&2
      exit 2
      ;;
  esac
done
cd "$(dirname "$0")/.."
build=${BUILD:-build-gpu}
shared=${DOCQA_SHARED_DIR:-$PWD/../shared}
models=${MODELS:-/tmp/docqa-random-models}
gpu=${GPU:-0}
batches=${BATCHES:-1,2,4,8,16,32,64}
n_res=${N_RES:-5}
max_new=${MAX_NEW:-16}
graphs=${GRAPHS:-1}
die() { echo "bench-gpu: $*" >&2; exit 2; }
. scripts/bench-lib.sh

# ---- preconditions: say what is missing before building anything
command -v nvidia-smi >/dev/null 2>&1 || die "no NVIDIA driver here (nvidia-smi not found): this benchmark needs a GPU machine"
nvidia-smi -L >/dev/null 2>&1 || die "nvidia-smi sees no GPU: this benchmark needs a GPU machine"
command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ] || die "nvcc not found: install the CUDA toolkit to build the CUDA backend"
python3 - <<'EOF' || die "the transformers side needs python3 with torch (CUDA build), transformers and Pillow"
import torch, transformers, PIL  # noqa: F401
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
EOF

bench_threading

# ---- build
export PATH=$PATH:/usr/local/cuda/bin
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDOCQA_CUDA=ON >/dev/null
fi
cmake --build "$build" --target bench_gpu make_random_model docqa -j "$(nproc)" >/dev/null

# ---- pages
pages=()
if [ "${PAGES:-}" = fixtures ]; then
  for f in portrait_page.png gray_receipt.png small_chart.png banner_wide.png; do
    pages+=("$shared/fixtures/images/$f")
  done
elif [ -n "${PAGES:-}" ]; then
  read -r -a pages <<<"$PAGES"
else
  pages_dir=${PAGES_DIR:-/tmp/docqa-bench-pages}
  bench_corpus_pages "$build/cli/docqa" "$shared" "$pages_dir" "$n_res" || die "no corpus (or set PAGES)"
  # Fewer than 64 (pages that failed to render): mirrored copies, so that no batch repeats a
  # page, whose tiles docqa would encode once and transformers every time.
  [ -s "$pages_dir/list" ] && python3 scripts/pages_fill.py "$pages_dir/list" 64 "$pages_dir"
  mapfile -t pages <"$pages_dir/list"
fi
[ ${#pages[@]} -gt 0 ] || die "no page images (PAGES, or the corpus render in ${pages_dir:-})"
for p in "${pages[@]}"; do [ -f "$p" ] || die "page image $p not found"; done

echo "# $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader -i "$gpu")"
echo "# N=$n_res, $max_new new tokens a page, batches $batches, ${#pages[@]} pages: ${pages[*]##*/}"
[ $# -gt 0 ] || set -- 256m 2.2b
for m in "$@"; do
  case "$m" in 256m|2.2b) ;; *) die "model must be 256m or 2.2b, not '$m'" ;; esac
  dir=$models/smolvlm-$m-random-bf16
  if [ ! -f "$dir/model.safetensors" ]; then
    BUILD=$build scripts/make-random-model.sh "$m" "$dir" bf16
  fi
  out=$(mktemp)
  echo "## $m"
  "$build/tests/model/bench_gpu" "$dir" "cuda:$gpu" "$n_res" "$max_new" "$batches" "${pages[@]}" |
    tee -a "$out" || echo "docqa failed (see above)"
  # The host's share of each batch: the same run with ops that do no arithmetic (the GPU
  # waits for this wherever the host cannot queue work ahead of it).
  "$build/tests/model/bench_gpu" "$dir" host "$n_res" "$max_new" "$batches" "${pages[@]}" |
    sed 's/^docqa /docqa_host /' | tee -a "$out" || echo "docqa on the host backend failed (see above)"
  if [ "$graphs" = 1 ]; then
    # The decode step as a CUDA graph (off by default until verified on a GPU).
    DOCQA_CUDA_GRAPHS=1 "$build/tests/model/bench_gpu" "$dir" "cuda:$gpu" "$n_res" "$max_new" \
      "$batches" "${pages[@]}" | sed 's/^docqa /docqa_graphs /' | tee -a "$out" ||
      echo "docqa with CUDA graphs failed (see above)"
  fi
  python3 scripts/bench_gpu_hf.py "$dir" "cuda:$gpu" "$n_res" "$max_new" "$batches" "${pages[@]}" |
    tee -a "$out" || echo "transformers failed (see above)"
  awk -v model="$m" '
    /pages_per_s=/ {
      for (i = 1; i <= NF; i++) if ($i ~ /^pages_per_s=/) { split($i, kv, "="); v = kv[2] + 0 }
      for (i = 1; i <= NF; i++) if ($i ~ /^batch=/) { split($i, kb, "="); b = kb[2] }
      if (v > best[$1]) { best[$1] = v; at[$1] = b }
    }
    END {
      printf "%s: docqa best %.3f pages/s (batch %s), transformers best %.3f pages/s (batch %s)",
             model, best["docqa"], at["docqa"], best["hf"], at["hf"]
      if (best["hf"] > 0) printf ", ratio %.2fx (target >= 3x)", best["docqa"] / best["hf"]
      if (best["docqa_host"] > 0)
        printf "; the host alone %.0f pages/s (batch %s)", best["docqa_host"], at["docqa_host"]
      if (best["docqa_graphs"] > 0 && best["docqa"] > 0)
        printf "; with CUDA graphs %.3f pages/s (batch %s, %.2fx without)", best["docqa_graphs"],
               at["docqa_graphs"], best["docqa_graphs"] / best["docqa"]
      printf "\n"
    }' "$out"
  rm -f "$out"
done
