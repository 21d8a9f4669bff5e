#!/usr/bin/env bash
# The console and the report API on a store of many contacts: `rapport demo` generates a
# week of traffic for CONTACTS contacts of the example project, runs it into a store and
# serves it; then each page is fetched ROUNDS times (one after the other, with the bearer
# token) and the median and slowest time of each are printed.
#
#   bash bench/console_bench.sh                      # 100,000 contacts, 21 rounds
#   CONTACTS=10000 ROUNDS=11 bash bench/console_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONTACTS=${CONTACTS:-100000}
ROUNDS=${ROUNDS:-21}
PORT=${PORT:-18390}
cargo build --release --quiet -p rapport-cli
bin=target/release/rapport
dir=$(mktemp -d)
log="$dir/demo.log"
"$bin" demo --contacts "$CONTACTS" --dir "$dir/demo" --listen "127.0.0.1:$PORT" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 600); do
  grep -q "rapport serve: listening" "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.5
done
grep -E "^demo: (generated|running)|^processed" "$log"
token=$(grep -o "token  [0-9a-f]*" "$log" | awk '{print $2}')
base="http://127.0.0.1:$PORT"
contact=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["contact"])' "$dir/demo/week.jsonl")
contacts=$("$bin" report --store "sqlite:$dir/demo/demo.db" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["enrolled"])')
echo "store: $(du -h "$dir/demo/demo.db" | cut -f1), runs in the last 7 days: $contacts"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for page in "console/overview" "console/overview?since=30d" "console/flows" "console/handoffs" \
            "console/contacts?id=$contact" "v1/report?since=7d"; do
  : > "$dir/t"
  for _ in $(seq "$ROUNDS"); do
    curl -s -o /dev/null -w "%{time_total}\n" -H "Authorization: Bearer $token" "$base/$page" >> "$dir/t"
  done
  code=$(curl -s -o /dev/null -w "%{http_code}" -H "Authorization: Bearer $token" "$base/$page")
  printf '%-34s %s  median %6.1f ms  slowest %6.1f ms\n' "/$page" "$code" \
    "$(median < "$dir/t" | awk '{print $1*1000}')" "$(sort -n "$dir/t" | tail -1 | awk '{print $1*1000}')"
done
