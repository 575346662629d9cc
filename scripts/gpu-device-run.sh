#!/usr/bin/env bash
# Runs on a lent GPU machine from the bundle scripts/gpu-bundle.sh made (carry .gpu-shared):
#
#   bash .gpu-shared/device-run.sh [check] [e2e] [worker] [sanitize] [bench256] [bench22] [hf256]
#                                  [hf22] [profile256] [profile22] [cpu512]
#
# check: every test_backend_cuda test on its own (one failure does not hide the rest), its
#        graph tests again with float32 products, then check.py over fixtures-mini for each of
#        CHECK_CONFIGS (default "F32 f32,bf16 bf16": float32 products on the f32 variant the
#        bundle has weights for (b512), the default bf16 products on the bf16 ones (b512 and
#        a384) under the bf16 tolerances,
#        scripts/check-approx.py; the others: "F32 bf16", "F32 f32 graphs", "F32 bf16 graphs",
#        "bf16 bf16 graphs"; CHECK_CONFIGS=none: the unit tests alone);
# e2e: the pipeline end to end (ingest examples/docs, ask examples/questions.txt, run) on the tiny
#        f32 model three times: --device cpu, cuda:0 with float32 products (answers must equal
#        the CPU's), cuda:all as shipped (bf16 products: agreement printed); each answer must
#        record its device, weights mode and exactness.
# worker: `docqa run --device cuda:0 --batch 16` over ~90 corpus pages at N=5 with the tiny model,
#        where preparing pages on the host is the bottleneck: --prep-threads 1 against the default
#        pool (pages/s of each).
# sanitize: compute-sanitizer over test_backend_cuda: memcheck on every test, racecheck and
#        synccheck on the kernels with shared memory and barriers (attention, norms);
#        SANITIZE_TESTS="/backend_cuda/a /backend_cuda/b": all three tools on those tests alone.
# bench256/bench22: bench_gpu on random 256M / 2.2B bf16 snapshots (BATCHES, default 1,8,32,64),
#        then on its host backend (docqa_host: the host's share of each batch), and with CUDA
#        graphs when GRAPHS=1, and at COMPARE_BATCHES (64) with each setting of COMPARE_ENV (';'
#        between settings, spaces between one setting's variables; default DOCQA_CUDA_MERGE=0:
#        products one tile or prompt at a time) when COMPARE=1; PAGES=corpus: 64 distinct corpus
#        pages instead of the four fixture pages cycled;
# hf256/hf22: scripts/bench_gpu_hf.py on the same snapshot (HF_BATCHES: transformers' batch
#        sizes, when not BATCHES);
# profile256/profile22: 64 pages with DOCQA_CUDA_PROFILE=1 (GPU time by op and shape);
# cpu512: the host CPU, not the GPU: where it has AVX-512F, that GEMM kernel against the AVX2
#        one bit for bit, and where it has AVX512-BF16, vdpbf16ps against its emulation
#        (test_gemm); the float32, bf16 and --weights bf16 GEMMs' GFLOP/s (bench_gemm).
# It prints nvidia-smi first (CUDA 13 needs a driver >= 580). Logs go to $OUT (the device tool
# brings them back).
#
# Time: a lent machine gives 10 minutes a command and 15 minutes of device time in all (its
# start, idle waits and every command). DEADLINE (seconds, default 520) ends the run in time for
# the command's limit: it is checked before each test, check.py run, sanitizer tool and
# benchmark, each of their time limits is cut to what is left, and what did not fit says
# "skipping ...: past DEADLINE". A test_backend_cuda test gets TEST_TIMEOUT (60) seconds.
# A session's plan (docs/performance.md, "A GPU session"):
#   1. `bash .gpu-shared/device-run.sh check` with the run tool's timeout_s 580; add `sanitize`
#      with SANITIZE_TESTS naming the tests the change touched;
#   2. on the warm machine, if status leaves the time: DEADLINE=<budget_left_s - 90>
#      `bash .gpu-shared/device-run.sh bench256 hf256` (BATCHES=1,8,64 to be quicker);
#   3. give the machine back. e2e, worker, bench22, hf22, profile and cpu512 each want a
#      session of their own. scripts/bench-gpu.sh and scripts/check-gpu.sh build on the GPU
#      machine and do not fit a lent session at all.
#
# The bundle is unpacked into UNPACK_DIR (/tmp/gb) once per machine, and again when the carried
# bundle's checksum differs (a rebuilt bundle carried to a warm machine). The tests read a few
# files from the source tree at the path it had where the bundle was built (.gpu-shared/srcdir):
# that path is made a link to this checkout when it does not exist here. CUBLAS_DIR: where
# libcublasLt.so.13 is, when not under /usr/local/cuda*, /usr/local/lib or /opt.
set -uo pipefail
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
for what in "$@"; do
  case "$what" in
    -h | --help)
      usage
      exit 0
      ;;
    check | e2e | worker | sanitize | bench256 | bench22 | hf256 | hf22 | profile256 | profile22 | cpu512) ;;
    *)
      echo "device-run: unknown step '$what'" >&2
      usage >&2
      exit 2
      ;;
  esac
done
cd "$(dirname "$0")/.."
root=$PWD
b=$root/.gpu-shared
out=${OUT:-/tmp/out}
gb=${UNPACK_DIR:-/tmp/gb}
mkdir -p "$out"
t0=$SECONDS
deadline=${DEADLINE:-520}
test_timeout=${TEST_TIMEOUT:-60}
step() { printf '\n## [%ds] %s\n' $((SECONDS - t0)) "$*"; }
# Seconds left before DEADLINE; a step's limit: its own, or what is left if less.
left() { echo $((deadline - (SECONDS - t0))); }
cap() {
  local l
  l=$(left)
  [ "$l" -ge 1 ] || l=1 # (timeout 0 would be none)
  if [ "$l" -lt "$1" ]; then echo "$l"; else echo "$1"; fi
}
# True (and says so) when nothing more fits before DEADLINE.
past() {
  [ "$(left)" -gt 0 ] && return 1
  echo "skipping $*: past DEADLINE=$deadline s"
}
# The driver first: CUDA 13 needs a driver >= 580.
nvidia-smi || echo "nvidia-smi failed (no driver?)"
sum=$(sha256sum "$b/bundle.tar.xz" | cut -d' ' -f1) || exit 2
if [ "$(cat "$gb/.sum" 2>/dev/null)" != "$sum" ]; then
  [ -e "$gb/.sum" ] && echo "bundle changed: unpacking it again"
  rm -rf "$gb" && mkdir -p "$gb" && xz -dc "$b/bundle.tar.xz" | tar xf - -C "$gb" || exit 2
  echo "$sum" >"$gb/.sum"
fi
# The tests read a few files from the source tree at the path they were built in.
src=$(cat "$b/srcdir" 2>/dev/null || true)
if [ -z "$src" ]; then
  echo "no $b/srcdir (a bundle from before it was written): tests that read the source tree fail"
elif [ "$src" != "$root" ] && { [ ! -e "$src" ] || [ -L "$src" ]; }; then
  mkdir -p "$(dirname "$src")" && ln -sfn "$root" "$src" ||
    echo "could not link $src to $root: tests that read the source tree fail"
fi
cublas_dir=${CUBLAS_DIR:-}
if [ -z "$cublas_dir" ]; then
  cublas=$(find /usr/local/cuda*/ /usr/local/lib /opt -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
  [ -n "$cublas" ] && cublas_dir=$(dirname "$cublas")
fi
[ -n "$cublas_dir" ] || { echo "no libcublasLt.so.13 on this machine (set CUBLAS_DIR)"; exit 2; }
libs="$gb/lib":$cublas_dir
export DOCQA_SHARED_DIR=$gb
run() { env LD_LIBRARY_PATH="$libs" "$@"; }
printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s/bin/docqa "$@" --device cuda:0\n' "$libs" "$gb" >"$gb/docqa-cuda"
chmod +x "$gb/docqa-cuda"
batches=${BATCHES:-1,8,32,64}
pages=()
if [ "${PAGES:-fixtures}" = corpus ]; then
  # Distinct real pages: the bundled corpus PDFs rendered at N=5 by docqa ingest (page images
  # are stored once per content), the first 64 by name. The four fixture pages cycled (the
  # default, as in earlier runs) repeat their tiles, which docqa encodes once and transformers
  # every time.
  if [ ! -s /tmp/pages/list ]; then
    mkdir -p /tmp/pages
    run "$gb/bin/docqa" ingest --db /tmp/pages/p.db -q "$gb/corpus" >/dev/null 2>&1
    find /tmp/pages/p.db.pages -name '*.png' | sort | head -64 >/tmp/pages/list
    # Fewer than 64 (a session once got 52): mirrored copies, so that no batch repeats a page.
    [ -s /tmp/pages/list ] && { python3 "$root/scripts/pages_fill.py" /tmp/pages/list 64 /tmp/pages ||
      echo "pages: no mirrored copies (python3 with Pillow?): batches above the list repeat pages"; }
  fi
  mapfile -t pages </tmp/pages/list
  echo "pages: ${#pages[@]} distinct corpus pages"
else
  for f in portrait_page.png gray_receipt.png small_chart.png banner_wide.png; do
    pages+=("$gb/fixtures/images/$f")
  done
fi
random_model() { # 256m|2.2b -> path
  local d=/tmp/models/smolvlm-$1-random-bf16
  if [ ! -f "$d/model.safetensors" ]; then
    if [ "$1" = 256m ]; then
      run "$gb/bin/make_random_model" "$gb/models/SmolVLM-256M-Instruct" \
        "$gb/models/SmolVLM-256M-Instruct" "$d" bf16 0 >&2
    else
      run "$gb/bin/make_random_model" "$gb/models/SmolVLM-Instruct-config" \
        "$gb/models/tiny-smolvlm-a384-v1tok" "$d" bf16 0 >&2
    fi
  fi
  echo "$d"
}
for what in "$@"; do
  past "$what" && continue
  case "$what" in
  check)
    step "test_backend_cuda, one test at a time"
    for t in $(run "$gb/bin/test_backend_cuda" -l | grep '^/'); do
      past "$t" && continue
      timeout "$(cap "$test_timeout")" env LD_LIBRARY_PATH="$libs" "$gb/bin/test_backend_cuda" \
        -p "$t" --verbose >>"$out/test_backend_cuda.log" 2>&1
      rc=$?
      printf '%-40s rc=%d\n' "$t" $rc
      [ $rc -eq 0 ] || tail -8 "$out/test_backend_cuda.log"
    done
    for t in /backend_cuda/graph_forward /backend_cuda/graph_generator; do
      past "$t with DOCQA_CUDA_F32=1" && continue
      DOCQA_CUDA_F32=1 timeout "$(cap "$test_timeout")" env LD_LIBRARY_PATH="$libs" "$gb/bin/test_backend_cuda" -p "$t" \
        >>"$out/test_backend_cuda.log" 2>&1
      printf '%-40s F32 rc=%d\n' "$t" $?
    done
    IFS=, read -r -a cfgs <<<"${CHECK_CONFIGS:-F32 f32,bf16 bf16}"
    [ "${CHECK_CONFIGS:-}" = none ] && cfgs=()
    for cfg in "${cfgs[@]}"; do
      past "check.py $cfg" && continue
      set -- $cfg
      step "check.py: products $1, variants $2 ${3:-}"
      e=()
      [ "$1" = F32 ] && e+=(DOCQA_CUDA_F32=1)
      [ "${3:-}" = graphs ] && e+=(DOCQA_CUDA_GRAPHS=1)
      f=()
      [ "$2" = bf16 ] && f+=(--bf16)
      # bf16 products: check.py under the bf16 tolerances (scripts/check-approx.py)
      checker=("$gb/conformance/check.py")
      [ "$1" = bf16 ] && checker=("$root/scripts/check-approx.py" bf16)
      env "${e[@]}" timeout "$(cap 150)" python3 "${checker[@]}" "$gb/docqa-cuda" \
        "$gb/fixtures-mini" "${f[@]}" >"$out/check-$1-$2-${3:-plain}.log" 2>&1
      grep -E 'FAIL|passed' "$out/check-$1-$2-${3:-plain}.log" | tail -6
    done
    ;;
  e2e)
    model="$gb/models/tiny-smolvlm-b512"
    for how in cpu cuda-f32 cuda; do
      past "e2e $how" && continue
      step "docqa ingest, ask, run: $how"
      db=/tmp/e2e/$how.db
      rm -rf /tmp/e2e/$how.db*; mkdir -p /tmp/e2e
      dev=cpu e=()
      [ "$how" = cuda-f32 ] && dev=cuda:0 e+=(DOCQA_CUDA_F32=1)
      [ "$how" = cuda ] && dev=cuda:all # counted in a child; one worker a GPU
      run "$gb/bin/docqa" ingest --db "$db" --model "$model" --n-res 2 -q "$root/examples/docs" &&
        run "$gb/bin/docqa" ask --db "$db" --model "$model" --max-new-tokens 12 \
          -f "$root/examples/questions.txt" &&
        env "${e[@]}" timeout "$(cap 240)" env LD_LIBRARY_PATH="$libs" "$gb/bin/docqa" run --db "$db" \
          --model "$model" --device "$dev" --batch 8 --until-empty &&
        run "$gb/bin/docqa" export --db "$db" --format jsonl >"$out/e2e-$how.jsonl"
      echo "rc=$?"
    done
    python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(how):
    path = os.path.join(out, f"e2e-{how}.jsonl")
    if not os.path.exists(path):
        sys.exit(f"e2e: FAIL (no answers from the {how} run)")
    rows = [json.loads(l) for l in open(path)]
    return {(os.path.basename(r["document_path"]), r["page"], r["question"]): r for r in rows}
cpu, f32, bf16 = load("cpu"), load("cuda-f32"), load("cuda")
ok = len(cpu) > 0 and set(cpu) == set(f32) == set(bf16)
ok &= all(r["device"] == "cpu" and r["exact"] is True for r in cpu.values())
ok &= all(r["device"] == "cuda:0" and r["exact"] is False for r in list(f32.values()) + list(bf16.values()))
same = sum(cpu[k]["answer"] == f32[k]["answer"] for k in cpu)
agree = sum(cpu[k]["answer"] == bf16[k]["answer"] for k in cpu)
print(f"e2e: {len(cpu)} answers; cuda float32 products equal the cpu's in {same}; cuda bf16 in {agree}")
print("e2e:", "PASS" if ok and same == len(cpu) else "FAIL")
PY
    ;;
  worker)
    model="$gb/models/tiny-smolvlm-b512"
    rm -rf /tmp/w && mkdir -p /tmp/w
    step "worker: corpus pages at N=5, cuda:0, batch 16: --prep-threads 1 against the default"
    run "$gb/bin/docqa" ingest --db /tmp/w/base.db --model "$model" -q "$gb/corpus" >/dev/null
    run "$gb/bin/docqa" ask --db /tmp/w/base.db --model "$model" --max-new-tokens 4 \
      "What is the title?"
    for t in 1 0; do
      past "worker, prep threads $t" && continue
      rm -rf /tmp/w/run.db*
      for f in /tmp/w/base.db /tmp/w/base.db-wal /tmp/w/base.db-shm; do
        [ -e "$f" ] && cp "$f" "/tmp/w/run.db${f#/tmp/w/base.db}"
      done
      ln -s /tmp/w/base.db.pages /tmp/w/run.db.pages
      opts=()
      [ "$t" = 0 ] || opts=(--prep-threads "$t")
      printf 'prep threads %s: ' "$([ "$t" = 0 ] && echo default || echo "$t")"
      timeout "$(cap 240)" env LD_LIBRARY_PATH="$libs" "$gb/bin/docqa" run --db /tmp/w/run.db \
        --model "$model" --device cuda:0 --batch 16 "${opts[@]}" --until-empty -q 2>&1 | tail -1
    done
    ;;
  sanitize)
    cs=$(command -v compute-sanitizer || find /usr/local/cuda*/ /opt -name compute-sanitizer -type f 2>/dev/null | head -1)
    if [ -z "$cs" ]; then
      echo "sanitize: no compute-sanitizer on this machine"
      continue
    fi
    # SANITIZE_TESTS: the tests to run under each tool (default: memcheck over every test,
    # racecheck and synccheck over the kernels with shared memory and barriers)
    read -ra stests <<<"${SANITIZE_TESTS:-/backend_cuda/attention_vision /backend_cuda/attention_causal /backend_cuda/attention_segments /backend_cuda/norms}"
    if [ -z "${SANITIZE_TESTS:-}" ]; then
      step "compute-sanitizer memcheck, every test_backend_cuda test"
      # but download_error and model_error, whose failing copies memcheck would count as errors,
      # and pixel_ring, whose 400 adds over 256 MB would take minutes under it
      timeout "$(cap 300)" env LD_LIBRARY_PATH="$libs" "$cs" --tool memcheck --error-exitcode 9 \
        "$gb/bin/test_backend_cuda" -s /backend_cuda/download_error -s /backend_cuda/model_error \
        -s /backend_cuda/pixel_ring \
        >"$out/sanitize-memcheck.log" 2>&1
      echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|^not ok" "$out/sanitize-memcheck.log" | head
    fi
    tools=(racecheck synccheck)
    [ -n "${SANITIZE_TESTS:-}" ] && tools=(memcheck racecheck synccheck)
    for tool in "${tools[@]}"; do
      step "compute-sanitizer $tool: ${stests[*]}"
      for t in "${stests[@]}"; do
        past "$tool $t" && continue
        timeout "$(cap 120)" env LD_LIBRARY_PATH="$libs" "$cs" --tool "$tool" --error-exitcode 9 \
          "$gb/bin/test_backend_cuda" -p "$t" >>"$out/sanitize-$tool.log" 2>&1
        printf '%-40s %s rc=%d\n' "$t" "$tool" $?
      done
      grep "ERROR SUMMARY" "$out/sanitize-$tool.log" | sort | uniq -c
    done
    ;;
  bench256 | bench22)
    m=${what#bench}; [ "$m" = 22 ] && m=2.2b || m=256m
    step "random $m bf16 snapshot"
    d=$(random_model "$m")
    past "bench_gpu $m" && continue
    step "bench_gpu $m batches $batches"
    timeout "$(cap 240)" env LD_LIBRARY_PATH="$libs" "$gb/bin/bench_gpu" "$d" cuda:0 5 16 "$batches" \
      "${pages[@]}" 2>&1 | tee -a "$out/bench.log"
    past "bench_gpu $m on the host backend" && continue
    step "bench_gpu $m batches $batches on the host backend (the host's share, no GPU work)"
    timeout "$(cap 120)" env LD_LIBRARY_PATH="$libs" "$gb/bin/bench_gpu" "$d" host 5 16 "$batches" \
      "${pages[@]}" 2>&1 | sed 's/^docqa /docqa_host /' | tee -a "$out/bench.log"
    if [ "${COMPARE:-0}" = 1 ]; then
      IFS=';' read -ra settings <<<"${COMPARE_ENV:-DOCQA_CUDA_MERGE=0}"
      for setting in "${settings[@]}"; do
        read -ra vars <<<"$setting"
        past "bench_gpu $m: $setting" && continue
        step "bench_gpu $m batches ${COMPARE_BATCHES:-64}: $setting"
        env "${vars[@]}" timeout "$(cap 240)" env LD_LIBRARY_PATH="$libs" "$gb/bin/bench_gpu" "$d" cuda:0 \
          5 16 "${COMPARE_BATCHES:-64}" "${pages[@]}" 2>&1 |
          sed "s/^docqa /docqa_${setting// /_} /" | tee -a "$out/bench.log"
      done
    fi
    [ "${GRAPHS:-0}" = 1 ] || continue
    past "bench_gpu $m with CUDA graphs" && continue
    step "bench_gpu $m with CUDA graphs"
    DOCQA_CUDA_GRAPHS=1 timeout "$(cap 240)" env LD_LIBRARY_PATH="$libs" "$gb/bin/bench_gpu" "$d" cuda:0 5 \
      16 "$batches" "${pages[@]}" 2>&1 | sed 's/^docqa /docqa_graphs /' | tee -a "$out/bench.log"
    ;;
  profile256 | profile22)
    m=${what#profile}; [ "$m" = 22 ] && m=2.2b || m=256m
    d=$(random_model "$m")
    step "bench_gpu $m, 64 pages, GPU time by op (DOCQA_CUDA_PROFILE=1) -> profile-$m.log"
    past "profile $m" && continue
    DOCQA_CUDA_PROFILE=1 timeout "$(cap 240)" env LD_LIBRARY_PATH="$libs" "$gb/bin/bench_gpu" "$d" cuda:0 5 \
      16 64 "${pages[@]}" >"$out/profile-$m.log" 2>&1
    grep -E '^docqa|profile .*ms in ops' "$out/profile-$m.log"
    grep -E '^profile ' "$out/profile-$m.log" | sed -n 2,16p
    ;;
  hf256 | hf22)
    m=${what#hf}; [ "$m" = 22 ] && m=2.2b || m=256m
    d=$(random_model "$m")
    past "transformers $m" && continue
    step "transformers $m batches ${HF_BATCHES:-$batches}"
    PYTHONUNBUFFERED=1 timeout "$(cap 300)" python3 "$root/scripts/bench_gpu_hf.py" "$d" cuda:0 5 16 \
      "${HF_BATCHES:-$batches}" "${pages[@]}" 2>&1 | grep -v -i warn | tee -a "$out/bench.log"
    ;;
  cpu512)
    step "host CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) threads," \
      "avx512f: $(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)," \
      "avx512_bf16: $(grep -qw avx512_bf16 /proc/cpuinfo && echo yes || echo no)"
    run timeout "$(cap 120)" "$gb/bin/test_gemm" 2>&1 | tail -8
    past "bench_gemm" && continue
    run timeout "$(cap 240)" "$gb/bin/bench_gemm" 1416 576 576 1416 1536 576 1416 576 1536 \
      5376 768 768 5376 3072 768 2>&1
    ;;
  *) echo "unknown step $what" ;;
  esac
done
step done
