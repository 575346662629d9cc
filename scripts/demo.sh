#!/usr/bin/env bash
# The main job, end to end, on a fresh machine:
#   install dependencies, build, ingest a folder of documents, ask questions, run the workers,
#   show the progress and the answers.
#
#   scripts/demo.sh [--model DIR] [--docs DIR] [--questions FILE] [--db FILE] [--workers K]
#
# With no --model it uses the bundled demo model (models/demo-tiny: SmolVLM-256M's geometry and
# tokenizer with tiny RANDOM weights, written by scripts/make-demo-model.py). The pipeline is
# real; THE DEMO MODEL'S ANSWERS ARE MEANINGLESS. For real answers give a real snapshot:
#   scripts/download-model.sh HuggingFaceTB/SmolVLM-256M-Instruct   (needs the Hugging Face Hub)
#   scripts/demo.sh --model models/SmolVLM-256M-Instruct
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

model=""
docs=examples/docs
questions=examples/questions.txt
db=examples/out/demo.db
workers=2
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --docs) docs=$2; shift 2 ;;
    --questions) questions=$2; shift 2 ;;
    --db) db=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==== %s\n' "$*"; }

step "dependencies and build"
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
docqa=$root/build/cli/docqa

if [ -z "$model" ]; then
  model=models/demo-tiny
  [ -f "$model/model.safetensors" ] || python3 scripts/make-demo-model.py --model-dir "$model"
  cat <<'MSG'

  Using the bundled demo model (models/demo-tiny). Its weights are RANDOM: the pipeline below is
  real, but the answers it prints are MEANINGLESS. Pass --model DIR with a real SmolVLM snapshot
  (scripts/download-model.sh fetches one where the Hugging Face Hub is reachable) for real answers.
MSG
elif [ ! -f "$model/config.json" ]; then
  echo "demo: $model is not a model snapshot (no config.json); see scripts/download-model.sh" >&2
  exit 2
fi

# A fresh database each time, so the demo shows the whole flow.
mkdir -p "$(dirname "$db")"
rm -rf "$db" "$db-wal" "$db-shm" "$db.pages"

step "ingest $docs (pages rendered at N=5)"
"$docqa" ingest --db "$db" --model "$model" "$docs"

step "ask the questions in $questions about every page"
"$docqa" ask --db "$db" --model "$model" --questions "$questions"

step "run $workers workers until the queue is empty"
"$docqa" run --db "$db" --model "$model" --workers "$workers" --until-empty

step "status"
"$docqa" status --db "$db"

step "answers (SELECT * FROM v_answers)"
sqlite3 -header -column "$db" \
  "SELECT replace(document_path, rtrim(document_path, replace(document_path, '/', '')), '')
            AS document, page, question, substr(answer, 1, 60) AS answer
     FROM v_answers ORDER BY document, page, question;"
[ "$model" = models/demo-tiny ] && echo && echo "(demo model: the answers above are meaningless)"
echo
echo "The database is $db; query it with: sqlite3 $db 'SELECT * FROM v_answers'"
