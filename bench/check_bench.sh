#!/usr/bin/env bash
# Times `rapport check` and `rapport build` on a generated project of 1,000 flows
# (about 100,000 lines), RUNS times each, and prints the median of every phase.
#
#   bash bench/check_bench.sh            # 11 runs, all cores
#   RUNS=21 TASKSET="taskset -c 0" bash bench/check_bench.sh   # one core
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-11}
TASKSET=${TASKSET:-}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cargo build --release --quiet
python3 bench/gen_project.py --flows 1000 --out "$dir/project"
bin=target/release/rapport

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

phases() { # command... ; prints "phase ms" lines of --timings for RUNS runs
  for _ in $(seq "$RUNS"); do
    $TASKSET "$@" --timings 2>&1 >/dev/null | grep -E '^ *[a-z ]+: +[0-9.]+ ms' || true
  done
}

report() {
  local title=$1; shift
  local out; out=$(phases "$@")
  echo "$title (median of $RUNS runs)"
  echo "$out" | awk -F: '{gsub(/^ +/, "", $1); print $1}' | awk '!seen[$0]++' | while read -r phase; do
    printf '  %-12s %8.1f ms\n' "$phase" "$(echo "$out" | grep -E "^ *$phase:" | awk '{print $(NF-1)}' | median)"
  done
}

report "rapport check (1,000 flows, $(cat "$dir"/project/*.flow | wc -l) lines)" "$bin" check "$dir/project"
report "rapport build" "$bin" build "$dir/project" -o "$dir/bundle.json"
echo "bundle: $(wc -c < "$dir/bundle.json") bytes"
