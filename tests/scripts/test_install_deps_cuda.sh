#!/usr/bin/env bash
# What scripts/install-deps.sh says of the CUDA backend matches what CMakeLists.txt does: an nvcc
# older than 11.8 cannot compile the default architectures, a newer one builds the backend
# unless DOCQA_CUDA=OFF, none builds without it. Stand-in nvcc programs on PATH. Runs the script
# only where it would install nothing (as root, every package there), else skips (77).
#
#   tests/scripts/test_install_deps_cuda.sh SOURCE_DIR
set -euo pipefail
src=$1
script=$src/scripts/install-deps.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: install-deps.sh wants root (it would ask sudo)"
  exit 77
fi
for p in $(sed -n '/^packages=(/,/^)/p' "$script" | sed -e 's/#.*//' -e '1d;$d'); do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "SKIP: $p is not installed: install-deps.sh would install it"
    exit 77
  fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
# PATH holding the stand-in (or no nvcc at all), and the tools the script itself runs
mkdir -p "$tmp/tools"
for t in bash sed head tail dpkg-query dpkg-architecture grep update-alternatives id; do
  w=$(command -v "$t") && ln -sf "$w" "$tmp/tools/$t"
done
check() { # release (empty: no nvcc), the words the last line must hold
  local release=$1 want=$2 dir=$tmp/nvcc-${1:-none}
  mkdir -p "$dir"
  if [ -n "$release" ]; then
    printf '#!/bin/sh\necho "nvcc: NVIDIA (R) Cuda compiler driver"\necho "Cuda compilation tools, release %s, V%s.1"\necho "Build cuda_%s"\n' \
      "$release" "$release" "$release" >"$dir/nvcc"
    chmod +x "$dir/nvcc"
  fi
  local out
  out=$(PATH="$dir:$tmp/tools" bash "$script" | tail -n 1)
  case "$out" in
    *"$want"*) echo "ok: nvcc ${release:-none}: $out" ;;
    *)
      echo "FAIL: nvcc ${release:-none}: want '$want' in: $out"
      fail=1
      ;;
  esac
}
check 11.4 "(release 11.4), older than CUDA 11.8: the default CUDA architectures (sm_80, sm_90) will not compile"
check 11.8 "(release 11.8): cmake builds the CUDA backend (for sm_80 and sm_90"
check 13.0 "unless configured with -DDOCQA_CUDA=OFF"
check "" "no nvcc on PATH: cmake builds without the CUDA backend (optional)"
exit $fail
