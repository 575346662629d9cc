#!/usr/bin/env bash
# One letter-size page end to end on the CPU: docqa (fast backend "cpu" and the reference
# "cpu-ref") against transformers (torch float32, eager attention) in ONE invocation, same
# machine, same thread count; per-stage ms, decode tokens/s, peak RSS, docqa's ratio to
# transformers, and the machine's float32 GEMM peak (torch.mm) for scale.
#
#   scripts/bench-model.sh [--2.2b | --only-2.2b] [--no-hf] [--no-ref] [--no-batch] [--scaling]
#                          [--llama LLAMA_CPP_DIR]
#
# Snapshots: random weights with the real SmolVLM-256M-Instruct dimensions (scripts/
# make-random-model.sh), f32 and bf16, generated once into $MODELS (default
# /tmp/docqa-random-models; docqa built in $BUILD, default build); --2.2b adds
# SmolVLM-Instruct's dimensions (slow on 2 cores: ~9 GB).
# The page is generated (text, rules, a table; 1275x1650 = letter at 150 dpi), N=5 (21 tiles),
# the DocVQA prompt, 32 forced new tokens (MAX_NEW). THREADS (default: all cores) for both, and
# both under docqa's OpenMP settings (GOMP_SPINCOUNT=300 unless OMP_WAIT_POLICY or
# GOMP_SPINCOUNT is set). Each stage's CPU time (the process's, every thread's) is printed beside
# the wall times, in a second table with its own ratios: on a shared host the neighbours move
# wall time, hardly CPU time.
# The bf16 snapshot also runs with --weights int8 (DOCQA_WEIGHTS=int8: the decoder's matrices
# quantized at load, cpu_q8.h); its decode tok/s is printed as a ratio to bf16 as stored. Where
# the CPU has AVX512-BF16 it also runs with --weights bf16 (dtype "bdot": activations rounded to
# bf16, products on AMX tiles or through vdpbf16ps, cpu_gemm_bf16.c); elsewhere a line says that
# row is absent.
# Batched decode (unless --no-batch): 8 pages of different lengths (N = 1..4, prompts of ~100 to
# ~1,200 tokens) decoded together by one generator (tests/model/bench_batch.c), bf16 and int8,
# as total tokens/s and as a ratio to transformers' single stream on the big page above.
# Decode tok/s of docqa cpu is the median of 1 + DECODE_REPEATS decodes (default 4 at 256M, 1 at
# 2.2B; each repeat prefills a text-only prompt of the same length first; bench_model.c): one
# decode lasts about a second, and neighbours on a shared host move it by up to 2x.
# Speculative decoding (DOCQA_DRAFT=int8, the --draft option) runs once for each snapshot,
# guessing at every step (DOCQA_DRAFT_ADAPT=0): its tok/s, and what a draft step and a check
# cost. Random weights repeat one token, so every guess is taken; the rates at 90%, 80% and 60%
# taken are computed from the measured costs.
# --scaling: vision and prefill again with 1 thread (bf16), for the 1 -> THREADS speed-up.
# Our GEMM against OpenBLAS on the vision and prefill shapes, with the machine's FMA peak
# (tests/model/bench_gemm.c), and the decode-step products (1..8 rows) and attention against
# the machine's read bandwidth (tests/model/bench_gemv.c) end the report.
# transformers runs in a throw-away virtualenv ($VENV, default /tmp/docqa-bench-venv) created
# from PyPI on first use: torch, transformers==4.57.6, pillow==12.3.0.
#
# llama.cpp (optional, nothing of it is committed): --llama DIR, a llama.cpp source tree with
# build/bin/llama-mtmd-cli built. Its sources: git clone https://github.com/ggml-org/llama.cpp,
# or, where only PyPI is reachable, the copy vendored in llama-cpp-python's source package:
#   pip download llama-cpp-python --no-binary :all: --no-deps && tar xzf llama_cpp_python-*.tar.gz
#   DIR=$PWD/llama_cpp_python-*/vendor/llama.cpp
#   cmake -S $DIR -B $DIR/build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF
#   cmake --build $DIR/build -j2 --target llama-mtmd-cli
# The bf16 snapshots are converted once into $MODELS/gguf-smolvlm-SIZE/ (f16 and q8_0; the venv
# needs sentencepiece for the converter: $VENV/bin/pip install sentencepiece) and run on the same
# page and thread count; scripts/bench_llama.py says how its stages are measured. Its
# preprocessing differs from transformers' (17 slices of this page where transformers makes 21),
# so its rows give the slices it encoded, and its vision is also compared a slice.
set -euo pipefail
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
cd "$(dirname "$0")/.."
root=$PWD
build=${BUILD:-build}
models=${MODELS:-/tmp/docqa-random-models}
venv=${VENV:-/tmp/docqa-bench-venv}
threads=${THREADS:-$(nproc)}
max_new=${MAX_NEW:-32}
n_res=5
sizes=(256m) hf=1 refrun=1 batch=1 scaling=0 llama=
while [ $# -gt 0 ]; do
  case "$1" in
    --2.2b) sizes+=(2.2b) ;;
    --only-2.2b) sizes=(2.2b) ;;
    --no-hf) hf=0 ;;
    --no-ref) refrun=0 ;;
    --no-batch) batch=0 ;;
    --scaling) scaling=1 ;;
    --llama)
      [ $# -ge 2 ] && [ -n "$2" ] || { echo "bench-model: --llama needs LLAMA_CPP_DIR" >&2; exit 2; }
      llama=$2
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "bench-model: unknown argument '$1'" >&2
      usage >&2
      exit 2
      ;;
  esac
  shift
done
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" --target bench_model bench_batch bench_gemm bench_gemv make_random_model -j 2 >/dev/null
. scripts/bench-lib.sh
bench_venv "$venv"
py="$venv/bin/python"
if [ -n "$llama" ] && ! "$py" -c "import sentencepiece" 2>/dev/null; then
  "$venv/bin/pip" install -q sentencepiece # llama.cpp's converter imports it
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
page=$work/page.png
"$py" scripts/bench_model_hf.py page "$page"
export OMP_NUM_THREADS=$threads
bench_threading
peak=$("$py" scripts/bench_model_hf.py peak "$threads")
results=$work/results
: > "$results"
for m in "${sizes[@]}"; do
  for dtype in f32 bf16; do
    dir=$models/smolvlm-$m-random-$dtype
    if [ ! -f "$dir/model.safetensors" ]; then
      BUILD=$build scripts/make-random-model.sh "$m" "$dir" "$dtype" >&2
    fi
    devices=(cpu)
    [ "$refrun" = 1 ] && devices+=(cpu-ref)
    repeats=${DECODE_REPEATS:-$([ "$m" = 256m ] && echo 4 || echo 1)}
    export DOCQA_BENCH_DECODE_REPEATS=$repeats
    for dev in "${devices[@]}"; do
      [ "$dev" = cpu-ref ] && export DOCQA_BENCH_DECODE_REPEATS=0
      line=$(DOCQA_DEVICE=$dev "$build/tests/model/bench_model" "$dir" "$page" $n_res "$max_new")
      echo "$line" >&2
      echo "size=$m dtype=$dtype who=docqa-$dev $line" >> "$results"
    done
    export DOCQA_BENCH_DECODE_REPEATS=$repeats
    # speculative decoding (--draft int8), guessing at every step to measure what a round costs
    line=$(DOCQA_DRAFT=int8 DOCQA_DRAFT_ADAPT=0 DOCQA_BENCH_DECODE_REPEATS=0 \
      "$build/tests/model/bench_model" "$dir" "$page" $n_res "$max_new")
    echo "$line" >&2
    echo "size=$m dtype=$dtype who=docqa-draft $line" >> "$results"
    if [ "$dtype" = bf16 ]; then
      line=$(DOCQA_DEVICE=cpu DOCQA_WEIGHTS=int8 "$build/tests/model/bench_model" "$dir" "$page" \
        $n_res "$max_new")
      echo "$line" >&2
      echo "size=$m dtype=int8 who=docqa-cpu $line" >> "$results"
      if grep -qw avx512_bf16 /proc/cpuinfo; then
        line=$(DOCQA_DEVICE=cpu DOCQA_WEIGHTS=bf16 "$build/tests/model/bench_model" "$dir" "$page" \
          $n_res "$max_new")
        echo "$line" >&2
        echo "size=$m dtype=bdot who=docqa-cpu $line" >> "$results"
      else
        echo "bench-model: no AVX512-BF16 on this CPU: no --weights bf16 (vdpbf16ps) row" >&2
      fi
      if [ "$batch" = 1 ]; then
        for w in stored int8; do
          line=$(DOCQA_WEIGHTS=$w "$build/tests/model/bench_batch" "$dir" "$page" 8 "$max_new")
          echo "$line" >&2
          echo "size=$m dtype=$([ $w = int8 ] && echo int8 || echo bf16) who=docqa-batch $line" >> "$results"
        done
      fi
      if [ "$scaling" = 1 ]; then
        line=$(OMP_NUM_THREADS=1 DOCQA_BENCH_DECODE_REPEATS=0 "$build/tests/model/bench_model" "$dir" "$page" $n_res "$max_new")
        echo "$line" >&2
        echo "size=$m dtype=bf16 who=docqa-1thread $line" >> "$results"
      fi
    fi
    if [ "$hf" = 1 ] && [ "$dtype" = f32 ]; then
      line=$("$py" scripts/bench_model_hf.py run "$dir" "$page" $n_res "$max_new" "$threads")
      echo "$line" >&2
      echo "size=$m dtype=f32 who=transformers $line" >> "$results"
    fi
  done
  if [ -n "$llama" ]; then
    # llama.cpp on the same page: the bf16 snapshot as f16 and q8_0 GGUFs (converted once)
    gguf=$models/gguf-smolvlm-$m
    "$py" scripts/bench_llama.py convert "$llama" "$models/smolvlm-$m-random-bf16" "$gguf"
    for q in f16 q8_0; do
      if line=$("$py" scripts/bench_llama.py run "$llama/build/bin/llama-mtmd-cli" \
        "$gguf/model-$q.gguf" "$gguf/mmproj-f16.gguf" "$page" "$threads" "$max_new"); then
        echo "llama.cpp $q: $line" >&2
        echo "size=$m dtype=$q who=llama.cpp $line" >> "$results"
      else
        echo "bench-model: llama.cpp failed on $gguf/model-$q.gguf: no row for it" >&2
      fi
    done
  fi
done
echo
echo "threads=$threads $peak (torch float32 GEMM, 2048^3; _cpu: on the threads' CPU time); page 1275x1650 at N=$n_res, $max_new new tokens"
"$py" - "$results" "$threads" "$max_new" <<'PY'
import sys
rows = []
for line in open(sys.argv[1]):
    rows.append(dict(kv.split("=", 1) for kv in line.split()))
def num(r, k):
    return float(r[k]) if k in r else float("nan")
print(f"{'size':5} {'dtype':5} {'who':16} {'tiles':>5} {'prompt':>6} {'prep ms':>8} {'vision ms':>10} "
      f"{'prefill ms':>10} {'decode tok/s':>12} {'RSS MiB':>8} | ratio to transformers f32: "
      f"vision prefill decode RSS")
main = [r for r in rows if r["who"] not in ("docqa-batch", "docqa-1thread", "docqa-draft")]
for r in main:
    hf = next((h for h in rows if h["who"] == "transformers" and h["size"] == r["size"]), None)
    ratio = ""
    if hf is not None and r is not hf:
        ratio = (f"{num(r, 'vision_ms') / num(hf, 'vision_ms'):.2f}x "
                 f"{num(r, 'prefill_ms') / num(hf, 'prefill_ms'):.2f}x "
                 f"{num(r, 'decode_tok_s') / num(hf, 'decode_tok_s'):.2f}x "
                 f"{num(r, 'peak_rss_mb') / num(hf, 'peak_rss_mb'):.2f}x")
    print(f"{r['size']:5} {r['dtype']:5} {r['who']:16} {r.get('tiles', ''):>5} "
          f"{r.get('prompt_tokens', ''):>6} {num(r, 'preprocess_ms'):8.0f} {num(r, 'vision_ms'):10.0f} "
          f"{num(r, 'prefill_ms'):10.0f} {num(r, 'decode_tok_s'):12.2f} {num(r, 'peak_rss_mb'):8.0f} | {ratio}")
# the same stages in CPU time; decode a token: the first decode's CPU over its MAX_NEW - 1 steps
max_new = int(sys.argv[3])
def cpu_tok(r):
    return num(r, "decode_cpu_ms") / max(max_new - 1, 1)
print(f"\nCPU time (the process's, all threads) {'':4} {'prep ms':>8} {'vision ms':>10} "
      f"{'prefill ms':>10} {'decode ms/token':>15} | ratio to transformers f32 (less is faster): "
      f"vision prefill decode")
for r in (r for r in main if "vision_cpu_ms" in r):  # llama.cpp's rows have none
    hf = next((h for h in rows if h["who"] == "transformers" and h["size"] == r["size"]), None)
    ratio = ""
    if hf is not None and r is not hf:
        ratio = (f"{num(r, 'vision_cpu_ms') / num(hf, 'vision_cpu_ms'):.2f}x "
                 f"{num(r, 'prefill_cpu_ms') / num(hf, 'prefill_cpu_ms'):.2f}x "
                 f"{cpu_tok(r) / cpu_tok(hf):.2f}x")
    print(f"{r['size']:5} {r['dtype']:5} {r['who']:30} {num(r, 'preprocess_cpu_ms'):8.0f} "
          f"{num(r, 'vision_cpu_ms'):10.0f} {num(r, 'prefill_cpu_ms'):10.0f} {cpu_tok(r):15.1f} | "
          f"{ratio}")
# against llama.cpp: docqa's rows of the same size, each beside the GGUF of its kind (int8
# beside q8_0, the rest beside f16); vision also a tile, as the two cut the page differently
for r in rows:
    if r["who"] != "docqa-cpu":
        continue
    q = "q8_0" if r["dtype"] == "int8" else "f16"
    l = next((x for x in rows if x["who"] == "llama.cpp" and x["size"] == r["size"]
              and x["dtype"] == q), None)
    if l is None:
        continue
    print(f"{r['size']} {r['dtype']:5} against llama.cpp {q}: vision "
          f"{num(r, 'vision_ms') / num(l, 'vision_ms'):.2f}x ("
          f"{num(r, 'vision_ms') / num(r, 'tiles') / (num(l, 'vision_ms') / num(l, 'tiles')):.2f}x "
          f"a tile: {r['tiles']} tiles against {l['tiles']}), prefill "
          f"{num(r, 'prefill_ms') / num(l, 'prefill_ms'):.2f}x, decode "
          f"{num(r, 'decode_tok_s') / num(l, 'decode_tok_s'):.2f}x, RSS "
          f"{num(r, 'peak_rss_mb') / num(l, 'peak_rss_mb'):.2f}x")
for r in rows:
    if r["who"] != "docqa-cpu" or r["dtype"] != "int8":
        continue
    b = next((x for x in rows if x["size"] == r["size"] and x["dtype"] == "bf16"
              and x["who"] == "docqa-cpu"), None)
    if b is not None:
        print(f"{r['size']}: --weights int8 decode {num(r, 'decode_tok_s') / num(b, 'decode_tok_s'):.2f}x "
              f"bf16 as stored (target >= 1.5x), prefill {num(r, 'prefill_ms') / num(b, 'prefill_ms'):.2f}x")
for r in rows:
    if r["who"] != "docqa-draft":
        continue
    plain = next((x for x in rows if x["size"] == r["size"] and x["dtype"] == r["dtype"]
                  and x["who"] == "docqa-cpu"), None)
    hf = next((h for h in rows if h["who"] == "transformers" and h["size"] == r["size"]), None)
    guesses, taken = num(r, "draft_tokens"), num(r, "draft_accepted")
    rounds = num(r, "decode_calls") - guesses
    if not guesses > 0 or not rounds > 0:
        continue
    k = round(guesses / rounds)
    t_d = num(r, "draft_ms") / guesses
    t_v = (num(r, "decode_ms") - num(r, "draft_ms")) / rounds
    def vs(rate):
        s = f"{rate:.1f} tok/s"
        if plain is not None:
            s += f", {rate / num(plain, 'decode_tok_s'):.2f}x plain"
        if hf is not None:
            s += f", {rate / num(hf, 'decode_tok_s'):.2f}x transformers"
        return s
    print(f"{r['size']} {r['dtype']} + int8 draft (k={k}): {vs(num(r, 'decode_tok_s'))} with "
          f"{100 * taken / guesses:.0f}% of the guesses taken (random weights repeat a token: "
          f"every guess is right); a draft step {t_d:.1f} ms, a check of {k + 1} rows {t_v:.1f} ms")
    for a in (0.9, 0.8, 0.6):
        per_round = (1 - a ** (k + 1)) / (1 - a)
        print(f"    at {int(a * 100)}% taken: {vs(1000 * per_round / (k * t_d + t_v))}")
for r in rows:
    if r["who"] != "docqa-batch":
        continue
    hf = next((h for h in rows if h["who"] == "transformers" and h["size"] == r["size"]), None)
    vs_hf = (f" = {num(r, 'batch_decode_tok_s') / num(hf, 'decode_tok_s'):.1f}x transformers' single "
             f"stream (target >= 25x)" if hf is not None else "")
    print(f"{r['size']} {r['dtype']}: batched decode of {r['pages']} pages (prompts "
          f"{r['prompt_tokens_min']}..{r['prompt_tokens_max']} tokens) {num(r, 'batch_decode_tok_s'):.1f} "
          f"tok/s in all{vs_hf}; the longest alone {num(r, 'single_decode_tok_s'):.1f} tok/s")
for r in rows:
    if r["who"] != "docqa-1thread":
        continue
    t = next((x for x in rows if x["size"] == r["size"] and x["dtype"] == "bf16"
              and x["who"] == "docqa-cpu"), None)
    if t is not None:
        print(f"{r['size']} bf16: 1 -> {sys.argv[2]} threads: vision {num(r, 'vision_ms') / num(t, 'vision_ms'):.2f}x, "
              f"prefill {num(r, 'prefill_ms') / num(t, 'prefill_ms'):.2f}x (target >= 1.8x)")
PY
echo
"$build/tests/model/bench_gemm"
echo
# Decode is bound by memory: the decode-step products and attention against the machine's read
# bandwidth (tests/model/bench_gemv.c), for each size benchmarked.
for m in "${sizes[@]}"; do
  echo "decode-step ops, $m dimensions:"
  "$build/tests/model/bench_gemv" $([ "$m" = 2.2b ] && echo --2.2b)
done
