#!/usr/bin/env bash
# The main job, end to end, on a fresh machine:
#   install dependencies, build, ingest a folder of documents, ask questions, run the workers,
#   show the progress and the answers.
#
#   scripts/demo.sh [--model DIR] [--docs DIR] [--questions FILE] [--db FILE] [--workers K]
#                   [--docqa BINARY]
#
#   --model DIR       a SmolVLM snapshot (default: the bundled demo model, models/demo-tiny)
#   --docs DIR        the documents to ingest (default examples/docs)
#   --questions FILE  one question a line, or a JSON list (default examples/questions.txt)
#   --db FILE         the database (default examples/out/demo.db, made afresh on every run);
#                     a database you name is used as it is, never deleted: the demo adds its
#                     documents and questions to it
#   --workers K       worker processes (default 2)
#   --docqa BINARY    use this docqa binary: no dependencies installed, nothing built
# Relative paths are taken from the folder you run the script in.
#
# With no --model it uses the bundled demo model (SmolVLM-256M's geometry and tokenizer with tiny
# RANDOM weights, written by scripts/make-demo-model.py). The pipeline is real; THE DEMO MODEL'S
# ANSWERS ARE MEANINGLESS. For real answers give a real snapshot:
#   scripts/download-model.sh HuggingFaceTB/SmolVLM-256M-Instruct   (needs the Hugging Face Hub)
#   scripts/demo.sh --model models/SmolVLM-256M-Instruct
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
die_usage() {
  echo "demo: $*" >&2
  echo "usage: scripts/demo.sh [--model DIR] [--docs DIR] [--questions FILE] [--db FILE]" \
    "[--workers K] [--docqa BINARY] (see --help)" >&2
  exit 2
}
# Text the demo did not write (paths the user typed, file names, questions, answers) is shown as
# the CLI shows such text (README, terminal escapes): control and other invisible characters as
# \uXXXX, bytes that are not UTF-8 as \xNN, so that a folder named with an escape sequence cannot
# drive the terminal. shown_py defines shown(text, width) for the Python below.
shown_py='
def shown(text, width=None):
    out = []
    for c in text:
        if 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append("\\x%02x" % (ord(c) - 0xDC00))
        elif c == " " or (c.isprintable() and not c.isspace()):
            out.append(c)
        elif c in "\n\t":
            out.append("\\n" if c == "\n" else "\\t")
        else:
            out.append(("\\U%08x" if ord(c) > 0xFFFF else "\\u%04x") % ord(c))
    s = "".join(out)
    return s if width is None or len(s) <= width else s[: width - 3] + "..."
'
# One argument, so shown. Until what was given is checked (usage errors run nothing: python3 may
# not be installed yet), every byte that is not printable ASCII as \xNN.
checked=0
shown() {
  if [ "$checked" = 1 ] && command -v python3 >/dev/null 2>&1; then
    python3 -c "$shown_py"'
import sys
print(shown(sys.argv[1]))' "$1"
  else
    local LC_ALL=C s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
      c=${s:i:1}
      case "$c" in
        [\ -~]) out+=$c ;;
        *) printf -v c '\\x%02x' "'$c" && out+=$c ;;
      esac
    done
    printf '%s\n' "$out"
  fi
}
# A path as the caller meant it: relative to the folder the script was run from.
from_caller() { case "$1" in /* | -) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

model=""
docs=""
questions=""
db=""
workers=2
docqa=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --model | --docs | --questions | --db | --workers | --docqa)
      [ $# -ge 2 ] || die_usage "$1 needs a value"
      [ -n "$2" ] || die_usage "$1 '': an empty value"
      case "$1" in
        --model) model=$(from_caller "$2") ;;
        --docs) docs=$(from_caller "$2") ;;
        --questions) questions=$(from_caller "$2") ;;
        --db) db=$(from_caller "$2") ;;
        --workers) workers=$2 ;;
        --docqa) docqa=$(from_caller "$2") ;;
      esac
      shift 2
      ;;
    *) die_usage "unknown argument '$(shown "$1")'" ;;
  esac
done

# What was given is checked before anything is installed or built.
if [ -n "$model" ] && [ ! -f "$model/config.json" ]; then
  if [ -d "$model" ]; then
    why="a folder without config.json"
  elif [ -e "$model" ]; then
    why="not a folder"
  else
    why="no such folder"
  fi
  echo "demo: --model $(shown "$model"): $why, not a model snapshot; see scripts/download-model.sh" >&2
  exit 2
fi
if [ -n "$docs" ] && [ ! -e "$docs" ]; then
  echo "demo: --docs $(shown "$docs"): no such file or folder" >&2
  exit 2
fi
if [ -n "$questions" ] && [ "$questions" != - ] && [ ! -f "$questions" ]; then
  echo "demo: --questions $(shown "$questions"): no such file" >&2
  exit 2
fi
if [ -n "$db" ] && [ -d "$db" ]; then
  echo "demo: --db $(shown "$db"): is a folder; give a database file" >&2
  exit 2
fi
case "$workers" in
  '' | *[!0-9]* | 0) die_usage "--workers '$(shown "$workers")': expected a whole number of at least 1" ;;
esac
if [ -n "$docqa" ] && [ ! -x "$docqa" ]; then
  echo "demo: --docqa $(shown "$docqa"): not an executable file" >&2
  exit 2
fi

checked=1

cd "$(dirname "$0")/.."
root=$PWD
docs=${docs:-$root/examples/docs}
questions=${questions:-$root/examples/questions.txt}

step() { printf '\n==== %s\n' "$*"; }

if [ -z "$docqa" ]; then
  step "dependencies and build"
  bash scripts/install-deps.sh
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j "$(nproc)" >/dev/null
  docqa=$root/build/cli/docqa
fi

demo_model=0
if [ -z "$model" ]; then
  demo_model=1
  model=$root/models/demo-tiny
  [ -f "$model/model.safetensors" ] || python3 scripts/make-demo-model.py --model-dir "$model"
  cat <<'MSG'

  Using the bundled demo model (models/demo-tiny). Its weights are RANDOM: the pipeline below is
  real, but the answers it prints are MEANINGLESS. Pass --model DIR with a real SmolVLM snapshot
  (scripts/download-model.sh fetches one where the Hugging Face Hub is reachable) for real answers.
MSG
fi

if [ -z "$db" ]; then
  # The demo's own database is made afresh each time, so the demo shows the whole flow.
  db=$root/examples/out/demo.db
  mkdir -p "$(dirname "$db")"
  rm -rf "$db" "$db-wal" "$db-shm" "$db.pages"
elif [ -e "$db" ]; then
  printf '\n  Using your database %s as it is (nothing in it is deleted).\n' "$(shown "$db")"
fi

step "ingest $(shown "$docs") (pages rendered at N=5)"
# Exit 1 says some documents failed (listed above); the others are still asked about.
rc=0
"$docqa" ingest --db "$db" --model "$model" "$docs" || rc=$?
[ "$rc" -le 1 ] || exit "$rc"

step "ask the questions in $(shown "$questions") about every page"
"$docqa" ask --db "$db" --model "$model" --questions "$questions"

if [ "$workers" = 1 ]; then
  step "run 1 worker until the queue is empty"
else
  step "run $workers workers until the queue is empty"
fi
"$docqa" run --db "$db" --model "$model" --workers "$workers" --until-empty

step "status"
"$docqa" status --db "$db"

step "answers (docqa export --format jsonl, as a table)"
# File names, questions and answers are text docqa did not write: a file named with an escape
# sequence would drive the terminal. They are shown as the CLI shows such text (README, terminal
# escapes): control and other invisible characters as \uXXXX.
"$docqa" export --db "$db" --format jsonl | python3 -c "$shown_py"'
import json, os, sys

rows = [json.loads(line) for line in sys.stdin]
table = sorted((shown(os.path.basename(r["document_path"]), 48), r["page"],
                shown(r["question"], 40), shown(r["answer"], 60)) for r in rows)
head = ("document", "page", "question", "answer")
widths = [max([len(str(h))] + [len(str(t[i])) for t in table]) for i, h in enumerate(head)]
for t in [head, tuple("-" * w for w in widths)] + table:
    print("  ".join(str(v).ljust(w) for v, w in zip(t, widths)).rstrip())
'
if [ "$demo_model" = 1 ]; then
  echo
  echo "(demo model: the answers above are meaningless)"
fi
echo
# The command is for pasting into a shell: the path quoted as one word. A path holding control or
# other invisible characters is written in bash's $'...' quoting with those bytes as \xNN (bash,
# zsh and ksh read it; POSIX sh does not), so that nothing raw reaches the terminal either.
shell_db=$(python3 -c "$shown_py"'
import sys
path, quote, backslash = sys.argv[1], chr(39), chr(92)
if shown(path) == path:
    print(quote + path.replace(quote, quote + backslash + quote + quote) + quote)
else:
    out = []
    for c in path:
        if c in (quote, backslash):
            out.append(backslash + c)
        elif shown(c) == c:
            out.append(c)
        else:
            out.extend(backslash + "x%02x" % b for b in c.encode("utf-8", "surrogateescape"))
    print("$" + quote + "".join(out) + quote)
' "$db")
echo "The database is $(shown "$db"); query it with: sqlite3 $shell_db 'SELECT * FROM v_answers'"
case "$shell_db" in
  \$*) echo "(that command quotes the database's name as bash, zsh and ksh read it; POSIX sh does not)" ;;
esac
