#!/usr/bin/env bash
# The funnel workload (shared/bench/WORKLOAD.md) through `rapport run`, against the I/O
# floor (decode every line, write one line per event, nothing else), RUNS times each.
#
#   bash bench/funnel_bench.sh                  # 100,000 contacts, 5 runs
#   CONTACTS=10000 RUNS=3 bash bench/funnel_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
source bench/funnel_setup.sh

measure() { # label, extra args...; prints median seconds and peak RSS
  local label=$1; shift
  local times=() rss=()
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$dir/time" "$bin" run --bundle "$dir/funnel.json" --events "$dir/events.jsonl" --actions "$dir/out.jsonl" "$@" 2>"$dir/err" >/dev/null
    read -r t m < "$dir/time"
    times+=("$t"); rss+=("$m")
  done
  local t m
  t=$(printf '%s\n' "${times[@]}" | median)
  m=$(printf '%s\n' "${rss[@]}" | median)
  printf '%-8s median %6.2f s  %9.0f events/s  peak RSS %6.1f MiB\n' "$label" "$t" "$(echo "$events / $t" | bc -l)" "$(echo "$m / 1024" | bc -l)"
  echo "$t" > "$dir/$label.t"
  echo "$m" > "$dir/$label.m"
}

measure floor --io-floor
measure run
grep -E "^(actions|suppressed|not enrolled)" "$dir/err"
ratio=$(echo "$(cat "$dir/run.t") / $(cat "$dir/floor.t")" | bc -l)
per_contact=$(echo "($(cat "$dir/run.m") - $(cat "$dir/floor.m")) * 1024 / $CONTACTS" | bc -l)
printf 'run / floor: %.2fx wall time; about %.0f bytes per contact above the floor\n' "$ratio" "$per_contact"
