#!/usr/bin/env bash
# `rapport run --store` on the funnel workload (docs/workload.md) next to the
# in-memory run, then a restart on the full store: how long a host takes to resume.
#
#   bash bench/durable_bench.sh                       # 100,000 contacts, 3 runs
#   CONTACTS=1000000 RUNS=1 bash bench/durable_bench.sh
#   SKIP_MEMORY=1 ...                                 # only the durable run and the restart
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
source bench/funnel_setup.sh

measure() { # label, fresh-store?, extra args...; prints median seconds and peak RSS
  local label=$1 fresh=$2; shift 2
  local times=() rss=()
  for _ in $(seq "$RUNS"); do
    if [ "$fresh" = yes ]; then rm -f "$dir"/store.db*; fi
    /usr/bin/time -f "%e %M" -o "$dir/time" "$bin" run --bundle "$dir/funnel.json" \
      --events "$dir/events.jsonl" --actions /dev/null "$@" 2>"$dir/err" >/dev/null
    read -r t m < "$dir/time"
    times+=("$t"); rss+=("$m")
  done
  local t m
  t=$(printf '%s\n' "${times[@]}" | median)
  m=$(printf '%s\n' "${rss[@]}" | median)
  printf '%-22s median %7.2f s  %9.0f events/s  peak RSS %7.1f MiB\n' "$label" "$t" \
    "$(echo "$events / $t" | bc -l)" "$(echo "$m / 1024" | bc -l)"
}

if [ -z "${SKIP_MEMORY:-}" ]; then
  measure "in memory, 2 workers" no
  measure "in memory, 1 worker" no --shards 1
fi
measure "durable (sqlite)" yes --store "sqlite:$dir/store.db"
grep -E "^(store|actions)" "$dir/err"
echo "store: $(du -m "$dir/store.db" | cut -f1) MB for $CONTACTS contacts"
# Restart on the full store and the same input: load the engine state, timers and the
# event ids of the dedupe window, find the input checkpoint, and carry on (nothing left).
measure "restart on full store" no --store "sqlite:$dir/store.db"
grep -E "^resumed" "$dir/err"
