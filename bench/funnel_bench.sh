#!/usr/bin/env bash
# The funnel workload (docs/workload.md) through `rapport run`, against the I/O
# floor (decode every line, write one line per event, nothing else), RUNS rounds of one
# floor run and one `rapport run` each.
#
#   bash bench/funnel_bench.sh                  # 100,000 contacts, 5 runs
#   CONTACTS=10000 RUNS=3 bash bench/funnel_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
source bench/funnel_setup.sh

# One round runs the floor and then the run, so both see the same moment of a noisy
# machine; the medians are taken over RUNS rounds.
once() { # label, extra args...; appends seconds and peak RSS (KB) to $dir/label.{t,m}
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$dir/time" "$bin" run --bundle "$dir/funnel.json" --events "$dir/events.jsonl" --actions "$dir/out.jsonl" "$@" 2>"$dir/err" >/dev/null
  read -r t m < "$dir/time"
  echo "$t" >> "$dir/$label.ts"; echo "$m" >> "$dir/$label.ms"
}
report() { # label
  local t m
  t=$(median < "$dir/$1.ts"); m=$(median < "$dir/$1.ms")
  printf '%-8s median %6.2f s  %9.0f events/s  peak RSS %6.1f MiB   (runs: %s)\n' "$1" "$t" "$(echo "$events / $t" | bc -l)" "$(echo "$m / 1024" | bc -l)" "$(tr '\n' ' ' < "$dir/$1.ts")"
  echo "$t" > "$dir/$1.t"; echo "$m" > "$dir/$1.m"
}
rm -f "$dir"/floor.ts "$dir"/floor.ms "$dir"/run.ts "$dir"/run.ms
for _ in $(seq "$RUNS"); do
  once floor --io-floor
  once run
done
report floor
report run
grep -E "^(actions|suppressed|not enrolled)" "$dir/err"
ratio=$(echo "$(cat "$dir/run.t") / $(cat "$dir/floor.t")" | bc -l)
per_contact=$(echo "($(cat "$dir/run.m") - $(cat "$dir/floor.m")) * 1024 / $CONTACTS" | bc -l)
printf 'run / floor: %.2fx wall time; about %.0f bytes per contact above the floor\n' "$ratio" "$per_contact"
