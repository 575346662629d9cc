#!/usr/bin/env bash
# Every script in scripts/: `--help` prints its usage and exits 0 having done nothing else (no
# build, install, format, download, test run or heavy Python import), and an unknown option
# exits 2 with its usage on stderr, doing nothing either. Doing something is caught by stand-ins
# for the tools the scripts run (first on PATH) and for the Python modules they import: each
# records its call and fails.
set -euo pipefail
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python=$(command -v python3)
calls=$tmp/calls
mkdir -p "$tmp/bin" "$tmp/py/PIL"
for tool in cmake ctest make clang-format apt-get sudo curl pip pip3 nvidia-smi nvcc sqlite3 \
  pdftocairo psql initdb pg_ctl git xz tar python3; do
  printf '#!/bin/sh\necho "%s $*" >>"%s"\nexit 1\n' "$tool" "$calls" >"$tmp/bin/$tool"
  chmod +x "$tmp/bin/$tool"
done
for mod in torch transformers tokenizers numpy PIL/__init__; do
  printf 'open("%s", "a").write("import %s\\n")\nraise ImportError("stand-in")\n' "$calls" \
    "$mod" >"$tmp/py/$mod.py"
done

failed=0
check() { # check SCRIPT: runs it with --help and with an unknown option
  local script=$1 name
  name=$(basename "$script")
  local run=(bash "$script")
  case "$script" in *.py) run=("$python" "$script") ;; esac
  : >"$calls"
  local rc=0
  (cd "$tmp" && PATH="$tmp/bin:$PATH" PYTHONPATH="$tmp/py" timeout 60 "${run[@]}" --help \
    >"$tmp/out" 2>"$tmp/err") || rc=$?
  if [ "$rc" != 0 ] || ! grep -qe "$name" -e "${name#gpu-}" "$tmp/out" || [ -s "$calls" ]; then
    echo "FAIL: $name --help: exit $rc (want 0, usage naming $name on stdout, nothing run)"
    sed 's/^/  out: /' "$tmp/out" | head -5
    sed 's/^/  err: /' "$tmp/err" | head -5
    sed 's/^/  ran: /' "$calls"
    failed=1
  fi
  : >"$calls"
  rc=0
  (cd "$tmp" && PATH="$tmp/bin:$PATH" PYTHONPATH="$tmp/py" timeout 60 "${run[@]}" \
    --no-such-option >"$tmp/out" 2>"$tmp/err") || rc=$?
  if [ "$rc" != 2 ] || [ ! -s "$tmp/err" ] || [ -s "$calls" ]; then
    echo "FAIL: $name --no-such-option: exit $rc (want 2, usage on stderr, nothing run)"
    sed 's/^/  err: /' "$tmp/err" | head -5
    sed 's/^/  ran: /' "$calls"
    failed=1
  fi
}
n=0
for script in "$src"/scripts/*.sh "$src"/scripts/*.py; do
  # bench-lib.sh is sourced by the benchmarks, not run
  [ "$(basename "$script")" = bench-lib.sh ] && continue
  check "$script"
  n=$((n + 1))
done
[ "$failed" = 0 ] || exit 1
echo "$n scripts: --help prints usage, an unknown option exits 2, neither runs anything"
