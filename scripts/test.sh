#!/usr/bin/env bash
# Installs dependencies, builds Lacuna and runs the whole test suite.
#   scripts/test.sh           Release build, all tests
#   scripts/test.sh asan      AddressSanitizer + UndefinedBehaviorSanitizer build, all tests
#   scripts/test.sh tsan      ThreadSanitizer build, the C API and server tests (concurrent contexts and clients)
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
bash scripts/install-deps.sh
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset"
