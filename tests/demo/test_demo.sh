#!/usr/bin/env bash
# The README's main job on the bundled demo model, as scripts/demo.sh runs it, in a temporary
# folder: the demo model's weights are generated, the example folder ingested, one question asked
# about every page, the queue run dry; every page must end with exactly one answer, and the
# generated weights must equal the committed generator's output byte for byte on a second run.
set -euo pipefail
docqa=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cp -r "$src/models/demo-tiny" "$tmp/demo-tiny"
rm -f "$tmp/demo-tiny/model.safetensors"
python3 "$src/scripts/make-demo-model.py" --model-dir "$tmp/demo-tiny" 2>/dev/null
sum1=$(sha256sum "$tmp/demo-tiny/model.safetensors" | cut -d' ' -f1)
python3 "$src/scripts/make-demo-model.py" --model-dir "$tmp/demo-tiny" 2>/dev/null
sum2=$(sha256sum "$tmp/demo-tiny/model.safetensors" | cut -d' ' -f1)
[ "$sum1" = "$sum2" ] || { echo "demo model generator is not deterministic"; exit 1; }

db=$tmp/demo.db
"$docqa" ingest -q --db "$db" --model "$tmp/demo-tiny" "$src/examples/docs"
pages=$(sqlite3 "$db" "SELECT count(*) FROM pages WHERE status = 'ok'")
[ "$pages" -eq 5 ] || { echo "expected 5 pages from examples/docs, got $pages"; exit 1; }
"$docqa" ask --db "$db" --model "$tmp/demo-tiny" --max-new-tokens 8 "What is the date?"
"$docqa" run -q --db "$db" --model "$tmp/demo-tiny" --workers 2 --until-empty
answers=$(sqlite3 "$db" "SELECT count(DISTINCT page_id) || ' ' || count(*) FROM v_answers")
[ "$answers" = "5 5" ] || { echo "expected one answer for each of 5 pages, got $answers"; exit 1; }
"$docqa" status --db "$db"
echo "demo pipeline: 5 pages, 5 answers"

# Speculative decoding (--draft int8): the workers take it, and `generate` gives the tokens it
# gives without it, having guessed some.
"$docqa" ask --db "$db" --model "$tmp/demo-tiny" --max-new-tokens 12 "Who signed it?"
"$docqa" run -q --db "$db" --model "$tmp/demo-tiny" --draft int8 --until-empty
answers=$(sqlite3 "$db" "SELECT count(*) FROM v_answers")
[ "$answers" = 10 ] || { echo "expected 10 answers after the --draft run, got $answers"; exit 1; }
page=$(find "$db.pages" -name '*.png' | sort | head -n 1)
[ -n "$page" ] || { echo "no page image under $db.pages"; exit 1; }
for d in none int8; do
  "$docqa" generate --model "$tmp/demo-tiny" --image "$page" --prompt "Who signed it?" \
    --max-new-tokens 24 --ignore-eos --draft $d --json > "$tmp/gen-$d.json"
done
python3 - "$tmp/gen-none.json" "$tmp/gen-int8.json" <<'PY'
import json, sys
plain, spec = (json.load(open(p)) for p in sys.argv[1:])
assert spec["output_ids"] == plain["output_ids"], "--draft int8 changed the tokens"
assert plain["draft"]["guessed"] == 0, plain["draft"]
assert spec["draft"]["guessed"] > 0, spec["draft"]
assert 0 <= spec["draft"]["taken"] <= spec["draft"]["guessed"], spec["draft"]
assert spec["decode_tokens_per_s"] > 0
print(f"--draft int8: the same {len(spec['output_ids'])} tokens; "
      f"{spec['draft']['taken']} of {spec['draft']['guessed']} guesses taken")
PY

# scripts/demo.sh as a user runs it from a folder of their own (--docqa: the binary under test,
# nothing installed or built). Relative paths are the caller's; a database the user names keeps
# what it held.
demo=$src/scripts/demo.sh
work=$tmp/work
mkdir -p "$work/mydocs"
cp "$src/examples/docs/receipt.pdf" "$work/mydocs/"
printf 'What is the total?\n' >"$work/q.txt"
keep="keep it's.db"
"$docqa" ingest -q --db "$work/$keep" "$src/examples/docs/letter.pdf" >/dev/null
(cd "$work" && bash "$demo" --docqa "$docqa" --model ../demo-tiny --docs mydocs --questions q.txt \
  --db "$keep" --workers 1 >"$tmp/demo.out" 2>&1) || {
  cat "$tmp/demo.out"
  echo "demo.sh with relative paths and a named --db failed"
  exit 1
}
docs=$(sqlite3 "$work/$keep" "SELECT group_concat(path, ' ') FROM (SELECT path FROM documents ORDER BY path)")
# Where the checkout sits decides which path sorts first; compare in the same order.
want=$(printf '%s\n' "$work/mydocs/receipt.pdf" "$src/examples/docs/letter.pdf" | LC_ALL=C sort | paste -sd' ')
[ "$docs" = "$want" ] ||
  { echo "demo.sh --db $keep: expected letter.pdf kept and mydocs/receipt.pdf added, got: $docs"; exit 1; }
grep -qF "Using your database $work/$keep as it is" "$tmp/demo.out" ||
  { echo "demo.sh did not say it keeps the named database"; exit 1; }
[ "$(sqlite3 "$work/$keep" "SELECT count(*) FROM v_answers")" -ge 1 ] ||
  { echo "demo.sh --db $keep: no answers"; exit 1; }
[ -d "$work/$keep.pages" ] || { echo "demo.sh removed $keep.pages"; exit 1; }
# The closing hint is a command to paste: run by bash, it reads the database the demo used.
paste_hint() {
  local out=$1 db=$2 cmd got want
  cmd=$(sed -n 's/^The database is .*; query it with: //p' "$out")
  got=$(cd / && bash -c "$cmd" 2>&1) || true
  want=$(sqlite3 "$db" 'SELECT * FROM v_answers')
  if [ -z "$cmd" ] || [ -z "$want" ] || [ "$got" != "$want" ]; then
    cat -v "$out"
    echo "demo.sh: its closing command '$cmd' pasted into bash gave:"
    printf '%s\n' "$got" | cat -v
    exit 1
  fi
}
paste_hint "$tmp/demo.out" "$work/$keep"

# Text docqa did not write, printed by the demo: a file named with escape sequences and a question
# holding ESC and a C1 control (CSI) are shown as \uXXXX, never as raw bytes that would drive
# the terminal (sqlite3 printed them as they were); so are the paths the user typed, in the
# demo's own lines.
evil_docs=$(printf 'evil\033[32mdir')
evil_q=$(printf 'evil\033]0;t\007-q.txt')
evil_db=$(printf 'evil\302\233.db')
mkdir -p "$work/$evil_docs"
cp "$src/examples/docs/receipt.pdf" "$work/$evil_docs/$(printf 'bad\033[31mRED\033]0;title\007.pdf')"
printf 'What\033[2J is\302\233 the total?\n' >"$work/$evil_q"
(cd "$work" && bash "$demo" --docqa "$docqa" --model ../demo-tiny --docs "$evil_docs" \
  --questions "$evil_q" --db "$evil_db" --workers 1 >"$tmp/evil.out" 2>&1) || {
  cat "$tmp/evil.out"
  echo "demo.sh on a file named with escapes failed"
  exit 1
}
if LC_ALL=C grep -q "$(printf '[\001-\010\013-\037\177]\\|\302[\200-\237]')" "$tmp/evil.out"; then
  echo "demo.sh printed raw control characters:"
  cat -v "$tmp/evil.out"
  exit 1
fi
for want in 'bad\u001b[31mRED\u001b]0;title\u0007.pdf  1' 'What\u001b[2J is\u009b the total?' \
  '==== run 1 worker until' "==== ingest $work/evil\\u001b[32mdir (pages" \
  "==== ask the questions in $work/evil\\u001b]0;t\\u0007-q.txt about" \
  "The database is $work/evil\\u009b.db; query it with: sqlite3 \$'$work/evil\\xc2\\x9b.db' 'SELECT" \
  "(that command quotes the database's name as bash, zsh and ksh read it"; do
  grep -qF -- "$want" "$tmp/evil.out" || {
    cat -v "$tmp/evil.out"
    echo "demo.sh: expected '$want' in its output"
    exit 1
  }
done
paste_hint "$tmp/evil.out" "$work/$evil_db"
echo "demo.sh: control characters in paths, file names and questions shown as \\uXXXX"

# Usage errors: exit 2 naming the option, before anything is installed or built (stdout empty).
expect_usage_error() {
  local want=$1
  shift
  local rc=0
  (cd "$work" && bash "$demo" "$@" >"$tmp/u.out" 2>"$tmp/u.err") || rc=$?
  if [ "$rc" != 2 ] || [ -s "$tmp/u.out" ] || ! grep -qF -- "$want" "$tmp/u.err"; then
    echo "demo.sh $*: expected exit 2 saying '$want' with nothing done; got $rc:"
    cat "$tmp/u.out" "$tmp/u.err"
    exit 1
  fi
}
expect_usage_error "--model needs a value" --model
expect_usage_error "--db needs a value" --docs mydocs --db
expect_usage_error "unknown argument '--bogus'" --bogus
mkdir -p "$work/empty-model"
expect_usage_error "a folder without config.json" --model empty-model
expect_usage_error "--model $work/q.txt: not a folder" --model q.txt
expect_usage_error "--docs $work/nosuch: no such file or folder" --docs nosuch
expect_usage_error "--db $work/mydocs: is a folder" --db mydocs
# (before anything is installed, without python3: every byte not printable ASCII as \xNN)
expect_usage_error "--docs $work/no\\x1b[2Jsuch: no such file or folder" --docs "$(printf 'no\033[2Jsuch')"
expect_usage_error "--questions $work/no\\xc2\\x9bq.txt: no such file" --questions "$(printf 'no\302\233q.txt')"
if LC_ALL=C grep -q "$(printf '[\001-\010\013-\037\177]\\|\302[\200-\237]')" "$tmp/u.err"; then
  echo "demo.sh printed a path with raw control characters:"
  cat -v "$tmp/u.err"
  exit 1
fi
(cd "$work" && bash "$demo" --help >"$tmp/h.out" 2>&1) || { echo "demo.sh --help failed"; exit 1; }
grep -q '^  scripts/demo.sh \[--model DIR\]' "$tmp/h.out" || { echo "demo.sh --help: no usage line"; exit 1; }
if grep -qE '^(set |cd |usage\(\))' "$tmp/h.out"; then
  echo "demo.sh --help prints shell code:"
  cat "$tmp/h.out"
  exit 1
fi
echo "demo.sh: relative paths, a named --db kept, usage errors before any work"
