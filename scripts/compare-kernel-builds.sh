#!/usr/bin/env bash
# Compares two builds of bench-spmm-ukernels (e.g. the previous commit's and
# this one's) on a shared, noisy host: runs them alternately ROUNDS times
# (each run: 3 repetitions, median), then prints per benchmark both medians
# and the median and range of the per-round time ratios new / old. Only such
# paired ratios mean anything here: absolute times drift by tens of percent
# between minutes.
#   scripts/compare-kernel-builds.sh OLD_BIN NEW_BIN FILTER [ROUNDS=5]
# FILTER is a Google Benchmark regex, e.g. 'bitmap_bf16_ukernel_4x6.*/n:(1|16)/'.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
old="$1" new="$2" filter="$3" rounds="${4:-5}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for ((i = 1; i <= rounds; ++i)); do
  for build in old new; do
    bin="$old"
    [[ $build == new ]] && bin="$new"
    "$bin" --benchmark_filter="$filter" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
      --benchmark_format=json >"$work/$build-$i.json"
  done
done
/usr/bin/python3 - "$work" "$rounds" <<'EOF'
import json, statistics, sys

work, rounds = sys.argv[1], int(sys.argv[2])

def medians(build, i):
    with open(f"{work}/{build}-{i}.json") as f:
        runs = json.load(f)["benchmarks"]
    return {r["run_name"]: (r["real_time"], r["time_unit"]) for r in runs if r.get("aggregate_name") == "median"}

old = [medians("old", i) for i in range(1, rounds + 1)]
new = [medians("new", i) for i in range(1, rounds + 1)]
print(f"{'benchmark':64s} {'old':>12s} {'new':>12s}  new/old: median [range] over {rounds} rounds")
for name, (_, unit) in old[0].items():
    ratios = [n[name][0] / o[name][0] for o, n in zip(old, new)]
    print(f"{name:64s} {statistics.median(o[name][0] for o in old):9.1f} {unit} {statistics.median(n[name][0] for n in new):9.1f} {unit}"
          f"  {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]")
EOF
