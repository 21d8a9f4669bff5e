#!/usr/bin/env bash
# The funnel workload (shared/bench/WORKLOAD.md) through `rapport run`, against the I/O
# floor (decode every line, write one line per event, nothing else), RUNS times each.
#
#   bash bench/funnel_bench.sh                  # 100,000 contacts, 5 runs
#   CONTACTS=10000 RUNS=3 bash bench/funnel_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONTACTS=${CONTACTS:-100000}
RUNS=${RUNS:-5}
GEN=${GEN:-../shared/bench/gen_events.py}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cargo build --release --quiet
bin=target/release/rapport
$bin build bench/funnel -o "$dir/funnel.json" 2>/dev/null
python3 "$GEN" --contacts "$CONTACTS" --seed 7 > "$dir/events.jsonl"
events=$(wc -l < "$dir/events.jsonl")
echo "funnel: $CONTACTS contacts, $events events, $(du -m "$dir/events.jsonl" | cut -f1) MB"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

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
