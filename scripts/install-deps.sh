#!/usr/bin/env bash
# Installs Lacuna's build and test dependencies from Debian 12 packages.
# Idempotent: packages already present are skipped, and `apt-get update` runs
# only when something is missing. Arguments name further packages a script
# needs beside these (scripts/fuzz.sh: clang and LLVM's OpenMP runtime).
set -euo pipefail

packages=(
  build-essential cmake pkg-config ninja-build
  libdnnl-dev          # oneDNN 2.x: dense baseline and dense ops
  libxxhash-dev        # XXH3 checksums of model-file payloads (tens of GB/s)
  libsentencepiece-dev # tokenizer (tokenizer.model, stored inside .lacuna files)
  libtbb-dev           # concurrent queues / task arenas
  libxsimd-dev         # portable SIMD for non-AVX-512 paths
  libgtest-dev libgmock-dev
  libbenchmark-dev
  libhwloc-dev libnuma-dev
  nlohmann-json3-dev   # JSON (config.json, HTTP API)
  libcli11-dev         # command-line parsing
  libcpp-httplib-dev   # HTTP server (lacuna serve) and the load-test client
  prometheus-cpp-dev   # Prometheus metrics (GET /metrics)
  python3-numpy        # NumPy reference scripts (run with /usr/bin/python3)
  python3-matplotlib   # plots of benchmark sweeps
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
