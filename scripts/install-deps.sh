#!/usr/bin/env bash
# Installs every build, test and runtime dependency of docqa from Debian's packages.
# Idempotent; run as root (or with sudo) on a fresh Debian 12 machine.
#
#   scripts/install-deps.sh
set -euo pipefail
usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      echo "install-deps: unknown option '$arg'" >&2
      usage >&2
      exit 2
      ;;
  esac
done
[ $# -eq 0 ] || {
  echo "install-deps: unexpected argument '$1' (it takes none)" >&2
  usage >&2
  exit 2
}

packages=(
  # toolchain
  build-essential cmake pkg-config clang clang-format libclang-rt-14-dev python3
  # libraries docqa links
  libglib2.0-dev libglib2.0-dev-bin libjson-glib-dev libpcre2-dev
  libpoppler-glib-dev libcairo2-dev libtiff-dev libpng-dev libjpeg62-turbo-dev
  libsqlite3-dev libopenblas-openmp-dev libpq-dev libxxhash-dev
  # tools the tests and benchmarks drive
  sqlite3 poppler-utils libtiff-tools postgresql strace
  # scripts/lint.sh (static analysis; CI runs its cppcheck part)
  cppcheck clang-tidy
  # scripts/download-model.sh
  curl ca-certificates
)

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
else
  echo "install-deps: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# OpenBLAS and docqa must share one OpenMP runtime (libgomp): select the OpenMP build when
# several OpenBLAS variants are installed.
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
alt=/usr/lib/$arch/openblas-openmp/libblas.so.3
if [ -e "$alt" ] && update-alternatives --list "libblas.so.3-$arch" >/dev/null 2>&1; then
  "${sudo[@]}" update-alternatives --set "libblas.so.3-$arch" "$alt" >/dev/null || true
fi
# What CMakeLists.txt does with it: DOCQA_CUDA=AUTO (the default) or ON looks for nvcc ($CUDACXX,
# else PATH), compiles for CMAKE_CUDA_ARCHITECTURES (default sm_80 and sm_90, which need CUDA
# 11.8 or newer) and links the toolkit's cuBLAS; OFF never builds it.
if command -v nvcc >/dev/null 2>&1; then
  release=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n 1)
  read -r major minor <<<"${release:-0 0}"
  if [ "$major" -lt 11 ] || { [ "$major" -eq 11 ] && [ "$minor" -lt 8 ]; }; then
    echo "install-deps: nvcc found (release ${major}.${minor}), older than CUDA 11.8: the" \
      "default CUDA architectures (sm_80, sm_90) will not compile; configure with" \
      "-DCMAKE_CUDA_ARCHITECTURES=<yours> or -DDOCQA_CUDA=OFF"
  else
    echo "install-deps: nvcc found (release ${major}.${minor}): cmake builds the CUDA backend" \
      "(for sm_80 and sm_90 unless -DCMAKE_CUDA_ARCHITECTURES says otherwise; it needs the" \
      "toolkit's cuBLAS) unless configured with -DDOCQA_CUDA=OFF"
  fi
else
  echo "install-deps: no nvcc on PATH: cmake builds without the CUDA backend (optional) unless" \
    "\$CUDACXX names one; -DDOCQA_CUDA=ON makes a missing nvcc an error"
fi
