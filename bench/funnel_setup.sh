# Shared by the funnel benchmarks (sourced, not run): builds the release binary and the
# funnel bundle, generates the event stream of CONTACTS contacts into a scratch folder
# (DIR, or a temporary one removed at exit), and defines `median`.
CONTACTS=${CONTACTS:-100000}
GEN=${GEN:-bench/gen_events.py}
dir=${DIR:-$(mktemp -d)}
trap 'rm -rf "$dir"' EXIT
cargo build --release --quiet
bin=target/release/rapport
$bin build bench/funnel -o "$dir/funnel.json" 2>/dev/null
python3 "$GEN" --contacts "$CONTACTS" --seed 7 > "$dir/events.jsonl"
events=$(wc -l < "$dir/events.jsonl")
echo "funnel: $CONTACTS contacts, $events events, $(du -m "$dir/events.jsonl" | cut -f1) MB"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
