#!/usr/bin/env bash
# The console and the report API on a store of many contacts: `rapport demo` generates a
# week of traffic for CONTACTS contacts of the example project, runs it into a store and
# serves it; then each page is fetched in ROUNDS rounds (with the bearer token, one
# request at a time) and the median time of each is printed.
#
#   bash bench/console_bench.sh                      # 100,000 contacts, 11 rounds
#   CONTACTS=10000 ROUNDS=5 bash bench/console_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CONTACTS=${CONTACTS:-100000}
ROUNDS=${ROUNDS:-11}
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
pages=("console/overview" "console/overview?since=30d" "console/flows" "console/handoffs"
       "console/contacts?id=$contact" "v1/report?since=7d")
fetch() { curl -s -o /dev/null -w "%{time_total}\n" -H "Authorization: Bearer $token" "$base/$1"; }
# A round fetches every page twice: the first fetch computes (the report of a period is
# reused for 5 s), the second is answered from what the first computed. Rounds are 6 s
# apart, so every first fetch computes.
for r in $(seq "$ROUNDS"); do
  for i in "${!pages[@]}"; do
    fetch "${pages[$i]}" >> "$dir/first.$i"
    fetch "${pages[$i]}" >> "$dir/again.$i"
  done
  [ "$r" -lt "$ROUNDS" ] && sleep 6
done
printf '%-42s %18s %18s\n' "page (median of $ROUNDS rounds)" "computed" "again within 5 s"
for i in "${!pages[@]}"; do
  printf '%-42s %15.1f ms %15.1f ms\n' "/${pages[$i]}" \
    "$(median < "$dir/first.$i" | awk '{print $1*1000}')" "$(median < "$dir/again.$i" | awk '{print $1*1000}')"
done
