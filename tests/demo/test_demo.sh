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
