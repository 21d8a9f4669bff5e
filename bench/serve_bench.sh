#!/usr/bin/env bash
# `rapport serve` under load (docs/performance.md): signed WhatsApp webhooks at RATE a
# second for DURATION seconds, RUNS times, against a mock WhatsApp API on 127.0.0.1; prints the
# acknowledged rate and the p50/p99 of webhook -> 200 and webhook -> outbound call.
# MIX=1 takes turns between WhatsApp, Instagram, Messenger and Telegram webhooks, against
# the project of the channel tests.
#
#   RATE=2000 DURATION=30 RUNS=3 bash bench/serve_bench.sh
#   MIX=1 RATE=2000 DURATION=30 RUNS=3 bash bench/serve_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${RATE:-2000}"
DURATION="${DURATION:-30}"
RUNS="${RUNS:-3}"
cargo build --release -q -p rapport-cli -p serve-load
if [ "${MIX:-0}" = 1 ]; then
  PROJECT=tests/channels/project; MIXARG=--mix
else
  PROJECT=tests/serve/project; MIXARG=
fi
./target/release/rapport build "$PROJECT" -o target/serve-bench-bundle.json 2>/dev/null
for i in $(seq "$RUNS"); do
  echo "run $i of $RUNS"
  ./target/release/serve-load ./target/release/rapport target/serve-bench-bundle.json \
    --rate "$RATE" --seconds "$DURATION" --dir "${TMPDIR:-/tmp}/rapport-serve-load" $MIXARG 2>/dev/null
done
