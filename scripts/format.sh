#!/usr/bin/env bash
# Applies clang-format to every C/CUDA source (or, with --check, fails listing the files that
# are not formatted).
#
#   scripts/format.sh [--check]
set -euo pipefail
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
check=0
case "$#:${1:-}" in
  0:) ;;
  1:--check) check=1 ;;
  1:-h | 1:--help)
    usage
    exit 0
    ;;
  *)
    echo "format: unknown arguments '$*'" >&2
    usage >&2
    exit 2
    ;;
esac
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard -- '*.c' '*.h' '*.cu' '*.cuh' | sort -u |
  while read -r f; do [ -f "$f" ] && echo "$f"; done)
[ ${#files[@]} -eq 0 ] && exit 0
if [ $check -eq 1 ]; then
  bad=()
  for f in "${files[@]}"; do
    clang-format --style=file "$f" | cmp -s - "$f" || bad+=("$f")
  done
  if [ ${#bad[@]} -gt 0 ]; then
    echo "not clang-formatted (run scripts/format.sh): ${bad[*]}" >&2
    exit 1
  fi
  echo "format: ${#files[@]} files clean"
else
  clang-format --style=file -i "${files[@]}"
fi
