#!/usr/bin/env bash
# Installs dependencies, builds Lacuna (Release) and runs the main job on its
# small built-in default: a synthetic MoE model, converted at 70 % sparsity,
# generating text. Extra arguments go to `lacuna demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
./build/release/bin/lacuna demo "$@"
