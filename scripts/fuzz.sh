#!/usr/bin/env bash
# Fuzzes Lacuna's readers of untrusted input with libFuzzer, under ASan and
# UBSan (docs/fuzzing.md):
#   scripts/fuzz.sh [SECONDS] [TARGET ...]
# Each target (default: all of model-file checkpoint api-request batch http) runs
# SECONDS (default 300) from its committed corpus, tests/fuzz/corpus/TARGET.
# New inputs go to /tmp/lacuna-fuzz/corpus/TARGET, findings (the input that
# crashed, leaked or timed out) to /tmp/lacuna-fuzz/findings/TARGET. Exits
# non-zero when a target found something.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(model-file checkpoint api-request batch http)
bash scripts/install-deps.sh clang libomp-dev
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz
work=/tmp/lacuna-fuzz
found=()
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "$work/findings/$t"
  echo "== fuzz-$t for ${seconds} s"
  # One worker: the machine's two cores also run the target's OpenMP threads.
  if ! ./build/fuzz/bin/fuzz-"$t" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=6144 -print_final_stats=1 \
      -artifact_prefix="$work/findings/$t/" "$work/corpus/$t" "tests/fuzz/corpus/$t"; then
    found+=("$t")
  fi
done
if ((${#found[@]})); then
  echo "fuzz: findings for ${found[*]} in $work/findings" >&2
  exit 1
fi
echo "fuzz: no findings (${targets[*]}, ${seconds} s each)"
