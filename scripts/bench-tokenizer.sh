#!/usr/bin/env bash
# Tokenizer speed: docqa's tokenizer_encode vs the Hugging Face `tokenizers` library (0.22.2,
# the reference) on the same few MB of mixed text, one core each, in the same run.
#
#   scripts/bench-tokenizer.sh [TOKENIZER_JSON]     (default ../shared/models/SmolVLM-256M-Instruct)
#
# Builds build/tests/model/bench_tokenizer (BUILD=dir for another build folder, BENCH_BIN=path
# for a prebuilt binary), makes the
# text (the repository's sources and docs, the tokenizer corpus, shuffled line by line and
# repeated to ~4 MB), creates a throw-away venv with tokenizers, and prints MB/s for both, the
# ratio, and whether both produced the same number of ids; beside MB/s, MB per CPU second (the
# best pass's process CPU time), which a shared host's load moves least.
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
bench_args 1 "$@"
cd "$(dirname "$0")/.."
root=$PWD
build=${BUILD:-build}
tokjson=${1:-$root/../shared/models/SmolVLM-256M-Instruct/tokenizer.json}
[ -f "$tokjson" ] || { echo "bench-tokenizer: $tokjson not found (pass a tokenizer.json)"; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

bench=${BENCH_BIN:-}  # a prebuilt bench_tokenizer, or build it
if [ -z "$bench" ]; then
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  cmake --build "$build" --target bench_tokenizer -j 2 >/dev/null
  bench=$build/tests/model/bench_tokenizer
fi

python3 - "$work/text.txt" <<'PY'
import glob, json, random, sys
lines = []
for pat in ["**/*.c", "**/*.h", "**/*.md", "**/*.sql", "configs/**/*.txt", "scripts/*.sh"]:
    for p in sorted(glob.glob(pat, recursive=True)):
        if p.startswith("build"):
            continue
        with open(p, encoding="utf-8", errors="replace") as f:
            lines += f.read().split("\n")
corpus = json.load(open("tests/fixtures/tokenizer_corpus.json", encoding="utf-8"))
for c in corpus["cases"]:
    lines += c["text"].split("\n")
rng = random.Random(1)
out, size = [], 0
while size < 4_000_000:
    rng.shuffle(lines)
    for l in lines:
        out.append(l)
        size += len(l.encode("utf-8")) + 1
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write("\n".join(out))
PY
echo "text: $(wc -c <"$work/text.txt") bytes of mixed text, encoded line by line"

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "tokenizers==0.22.2" >/dev/null

docqa_out=$(DOCQA_CACHE_DIR="$work/cache" "$bench" "$tokjson" "$work/text.txt" 3)
hf_out=$(RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false "$work/venv/bin/python" - "$tokjson" "$work/text.txt" <<'PY'
import sys, time
from tokenizers import Tokenizer
t0 = time.perf_counter()
tok = Tokenizer.from_file(sys.argv[1])
print(f"load_ms {1000 * (time.perf_counter() - t0):.1f}")
data = open(sys.argv[2], "rb").read()
lines = data.decode("utf-8").split("\n")
# encode_batch with parallelism off: one core, and no Python overhead per line (the fairest
# view of the Rust code); the per-line loop is what a Python caller usually pays
best = best_cpu = 1e30
for r in range(3):
    a, c = time.perf_counter(), time.process_time()
    n = sum(len(e.ids) for e in tok.encode_batch(lines, add_special_tokens=False))
    best = min(best, time.perf_counter() - a)
    best_cpu = min(best_cpu, time.process_time() - c)
print(f"bytes {len(data)} ids {n}")
print(f"mb_per_s {len(data) / 1e6 / best:.2f}")
print(f"cpu_mb_per_s {len(data) / 1e6 / best_cpu:.2f}")
a = time.perf_counter()
for l in lines:
    tok.encode(l, add_special_tokens=False)
print(f"loop_mb_per_s {len(data) / 1e6 / (time.perf_counter() - a):.2f}")
PY
)
get() { echo "$1" | awk -v k="$2" '$1 == k { print $2 }'; }
get_ids() { echo "$1" | awk '$1 == "bytes" { print $4 }'; }
d=$(get "$docqa_out" mb_per_s); h=$(get "$hf_out" mb_per_s)
printf "docqa tokenizer:   %8s MB/s  (load %s ms from JSON, %s ms cached; first cold pass %s MB/s)\n" \
  "$d" "$(get "$docqa_out" load_ms)" "$(get "$docqa_out" load_again_ms)" \
  "$(get "$docqa_out" cold_mb_per_s)"
printf "HF tokenizers:     %8s MB/s  (load %s ms; encode_batch, 1 thread; per-line Python loop %s MB/s)\n" \
  "$h" "$(get "$hf_out" load_ms)" "$(get "$hf_out" loop_mb_per_s)"
printf "ratio docqa / HF:  %8s\n" "$(python3 -c "print(f'{$d / $h:.2f}')")"
dc=$(get "$docqa_out" cpu_mb_per_s); hc=$(get "$hf_out" cpu_mb_per_s)
printf "on CPU time:       %8s MB/CPU s docqa, %s HF: %s\n" "$dc" "$hc" \
  "$(python3 -c "print(f'{$dc / $hc:.2f}')")"
if [ "$(get_ids "$docqa_out")" = "$(get_ids "$hf_out")" ]; then
  echo "ids: same count ($(get_ids "$docqa_out"))"
else
  echo "ids: count differs: docqa $(get_ids "$docqa_out"), HF $(get_ids "$hf_out")"
  exit 1
fi
