#!/usr/bin/env bash
# The README's nightly script (Nightly jobs), taken from README.md as users copy it, with /srv/
# moved into a temporary folder and the bundled demo model: a night exports its answers and moves
# the checkpoint; a second run whose file name is the same (the same second, here a `date` that
# always says so) stops rather than replace that export, whose answers are past the checkpoint;
# a later night exports only what is new. The --json of ingest and status the nights logged hold
# only keys that README.md's lists of them ("JSON", under "Exit statuses, signals and JSON") name.
# Last, a night as README's /etc/cron.d/docqa starts it: its command under sh with only cron's
# environment (PATH /usr/bin:/bin unless the file sets one), the script and docqa installed in
# /usr/local/bin as README says (here a folder standing for it).
set -euo pipefail
docqa=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
srv=$tmp/srv

script=$tmp/docqa-nightly
awk '/^    #!\/bin\/sh$/ { f = 1 }
     f { sub(/^    /, ""); print }
     f && /^\[ "\$ingest" -eq 0 \]/ { exit }' "$src/README.md" | sed "s#/srv/#$srv/#g" >"$script"
grep -q '^docqa export --checkpoint-file' "$script" && tail -n 1 "$script" | grep -q ingest ||
  { echo "README.md: no nightly script found under 'Nightly jobs'"; cat "$script"; exit 1; }

mkdir -p "$srv/docqa/log" "$srv/docqa/out" "$srv/models" "$srv/archive" "$tmp/bin"
model=$srv/models/SmolVLM-256M-Instruct
cp -r "$src/models/demo-tiny" "$model"
rm -f "$model/model.safetensors"
python3 "$src/scripts/make-demo-model.py" --model-dir "$model" >/dev/null 2>&1
cp "$src/examples/docs/letter.pdf" "$src/examples/docs/invoice.pdf" "$srv/archive/"
printf 'What is the date?\n' >"$srv/docqa/questions.txt"
ln -s "$docqa" "$tmp/bin/docqa"
# Every run of the script in the same second, whatever the clock says.
printf '#!/bin/sh\necho 2026-01-01-013000\n' >"$tmp/bin/date"
chmod +x "$tmp/bin/date"

night() {
  local rc=0
  PATH="$tmp/bin:$PATH" sh "$script" >"$tmp/night.out" 2>"$tmp/night.err" || rc=$?
  echo "$rc"
}
# data rows of a CSV file (an answer may hold newlines)
rows() {
  python3 -c 'import csv, sys; print(len(list(csv.reader(open(sys.argv[1], newline="")))) - 1)' "$1"
}
out=$srv/docqa/out/answers-2026-01-01-013000.csv

rc=$(night)
[ "$rc" = 0 ] ||
  { echo "the first night exited $rc"; cat "$tmp/night.out" "$tmp/night.err"; exit 1; }
[ "$(rows "$out")" = 3 ] ||
  { echo "the first night's export: expected 3 answers (3 pages)"; cat "$out"; exit 1; }
[ "$(cat "$srv/docqa/answers.checkpoint")" = 3 ] || { echo "checkpoint not at 3"; exit 1; }
[ -s "$srv/docqa/log/status-2026-01-01-013000.json" ] || { echo "no status log"; exit 1; }

rc=$(night)
[ "$rc" = 2 ] && grep -q "exists: not overwritten" "$tmp/night.err" ||
  { echo "a second run in the same second: expected exit 2, got $rc"; cat "$tmp/night.err"
    exit 1; }
[ "$(rows "$out")" = 3 ] || { echo "the first night's export was replaced"; cat "$out"; exit 1; }
[ "$(cat "$srv/docqa/answers.checkpoint")" = 3 ] || { echo "the checkpoint moved"; exit 1; }

# The next night: one new document, only its answer exported.
printf '#!/bin/sh\necho 2026-01-02-013000\n' >"$tmp/bin/date"
cp "$src/examples/docs/receipt.pdf" "$srv/archive/"
rc=$(night)
[ "$rc" = 0 ] || { echo "the second night exited $rc"; cat "$tmp/night.err"; exit 1; }
[ "$(rows "$srv/docqa/out/answers-2026-01-02-013000.csv")" = 1 ] ||
  { echo "the second night: expected only the new page's answer"; exit 1; }
[ ! -e "$out.part" ] && [ ! -e "$srv/docqa/out/answers-2026-01-02-013000.csv.part" ] ||
  { echo "a .part file was left"; exit 1; }
# json_keys_listed README COMMAND FILE: every key of FILE (COMMAND's --json) is in README's list
json_keys_listed() {
  python3 - "$@" <<'EOF'
import json, re, sys
readme, command, path = sys.argv[1:]
text = open(readme, encoding="utf-8").read()
m = re.search(r"^- `%s`: (.*?)(?=\n- |\n\n)" % re.escape(command), text, re.M | re.S)
if not m:
    sys.exit(f"{readme}: no list of {command}'s --json keys")
listed = set(re.findall(r"`(\w+)`", m.group(1)))


def keys(o):
    if isinstance(o, dict):
        for k, v in o.items():
            yield k
            yield from keys(v)
    elif isinstance(o, list):
        for v in o:
            yield from keys(v)


missing = sorted(set(keys(json.load(open(path, encoding="utf-8")))) - listed)
if missing:
    sys.exit(f"{readme}: {command} --json writes {', '.join(missing)}, not in its list of keys")
EOF
}
log=$srv/docqa/log
json_keys_listed "$src/README.md" ingest "$log/ingest-2026-01-02-013000.json"
json_keys_listed "$src/README.md" status "$log/status-2026-01-02-013000.json"
# The script's prune ran and removed nothing: every page is current, and a day old at most.
json_keys_listed "$src/README.md" prune "$log/prune-2026-01-02-013000.json"
grep -q '"files_removed" : 0' "$log/prune-2026-01-02-013000.json" ||
  { echo "the nightly prune removed files"; cat "$log/prune-2026-01-02-013000.json"; exit 1; }
# The check itself, on a README that lost a key from each list.
sed -e 's/`not_hashed` (files/(files/' -e 's/`answers_by_snapshot` (/(/' "$src/README.md" \
  >"$tmp/README.md"
for c in ingest status; do
  ! json_keys_listed "$tmp/README.md" "$c" "$log/$c-2026-01-02-013000.json" 2>/dev/null ||
    { echo "a key left out of README's $c --json list was not found"; exit 1; }
done

# cron_night CRONFILE: the docqa line of README's /etc/cron.d/docqa, run as cron runs it
cron_night() {
  local cronpath cmd v rc=0
  cronpath=$(awk '/^    # \/etc\/cron.d\/docqa$/ { f = 1; next } f && !/^    / { exit }
                  f && /^    PATH=/ { sub(/^    PATH=/, ""); print }' "$1")
  cmd=$(awk '/^    # \/etc\/cron.d\/docqa$/ { f = 1; next } f && !/^    / { exit }
             f && /docqa-nightly/ { sub(/^ +/, ""); for (i = 0; i < 6; i++) sub(/^[^ ]+ +/, "")
                                   print }' "$1")
  [ -n "$cmd" ] || { echo "$1: no docqa-nightly line in /etc/cron.d/docqa"; return 1; }
  cmd=${cmd//\/usr\/local\/bin\//$usrlocal/}
  cmd=${cmd//\/srv\//$srv/}
  cronpath=${cronpath:-/usr/bin:/bin}
  local keep=()  # the sanitizer build's settings (its suppressions), which cron would not set
  for v in ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS; do [ -z "${!v:-}" ] || keep+=("$v=${!v}"); done
  env -i "${keep[@]}" HOME="$tmp" LOGNAME=docqa SHELL=/bin/sh \
    PATH="${cronpath//\/usr\/local\/bin/$usrlocal}" /bin/sh -c "$cmd" || rc=$?
  echo "$rc"
}
usrlocal=$tmp/usr-local-bin
mkdir -p "$usrlocal"
ln -s "$docqa" "$usrlocal/docqa"
cp "$script" "$usrlocal/docqa-nightly"
chmod +x "$usrlocal/docqa-nightly"
cp "$src/examples/docs/scanned-letter.tif" "$srv/archive/"
rc=$(cron_night "$src/README.md")
[ "$rc" = 0 ] && [ "$(cat "$srv/docqa/answers.checkpoint")" = 5 ] ||
  { echo "README's cron line: the night exited $rc (cron's PATH finds docqa?)"
    cat "$srv/docqa/log/nightly.log"; exit 1; }
# The check itself: without a PATH line in the cron file, cron's own PATH has no docqa.
sed '/^    PATH=/d' "$src/README.md" >"$tmp/README.md"
if ! PATH=/usr/bin:/bin command -v docqa >/dev/null; then  # unless a docqa is installed there
  rc=$(cron_night "$tmp/README.md")
  [ "$rc" != 0 ] || { echo "a cron file without PATH ran the night all the same"; exit 1; }
fi
echo "README nightly script: 3 answers, a same-second rerun refused, then 1 new answer;" \
  "ingest's and status's --json keys all in README's lists; a night from cron's environment"
