#!/usr/bin/env bash
# The main job on a fresh machine: install, build, and run the pipeline as far as it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
build/cli/docqa --help
