#!/usr/bin/env bash
# Instructions per request of Tollgate configurations, counted by valgrind's callgrind: the
# noise-free companion of ab.sh. On this shared machine CPU time per request spreads 10-30%
# between rounds; an instruction count repeats within about 1%. It counts user space only:
# the kernel's share (sockets, wake-ups) is not in it, so it states what a feature adds to
# Tollgate's own code, and ab.sh states what that costs in time.
#
#   loadtest/instructions.sh NAME=FRAGMENT [NAME=FRAGMENT ...]
#       FRAGMENT as in ab.sh: a YAML file appended to the base config, or `-` for none;
#       `@OTLP_GRPC@` becomes the live receiver's gRPC address. A line `# body: JSON` in it
#       is the request that variant gets (default: a short chat request to `fast`).
#   REQUESTS=4000 RATE=400   (defaults; under callgrind Tollgate is about 50 times slower)
#
# Each variant runs alone under callgrind; 200 requests warm it up (connections, pools), its
# counters are zeroed, then REQUESTS requests at RATE are counted on every thread.
# Example: what full sampling adds to each request.
#   printf 'tracing:\n  otlp: {endpoint: "http://@OTLP_GRPC@"}\n' > full.yaml
#   loadtest/instructions.sh plain=- full=full.yaml
set -euo pipefail
caller_dir=$(pwd)  # fragments are named relative to where the script was run from
cd "$(dirname "$0")/.."
root=$(pwd)
[ $# -ge 1 ] || { sed -n '2,18p' "$0"; exit 2; }

requests=${REQUESTS:-4000}
rate=${RATE:-400}
if ! command -v callgrind_control >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
cargo build --release --workspace --bins -q
bin=$root/target/release

# shellcheck source=loadtest/lib.sh
source "$root/loadtest/lib.sh"  # $work, $pids, cleanup on exit

MOCK=19501 OTLP_GRPC=19531 OTLP_HTTP=19532 PORT=19510
start_mock_and_receiver $MOCK $OTLP_GRPC $OTLP_HTTP

load() {  # load RATE SECONDS: prints the generator's summary line ($variant_body each request)
  taskset -c 1 "$bin/tollgate-load" --addr 127.0.0.1:$PORT --body "$variant_body" open --rate "$1" \
    --seconds "$2" | tail -n1
}
failed() {  # failed SUMMARY: the number of failed requests in a summary line
  python3 -c 'import json, sys; print(json.loads(sys.argv[1])["errors"])' "$1"
}

for spec in "$@"; do
  parse_variant "$spec"
  variant_config $PORT $MOCK "$variant_fragment" 127.0.0.1:$OTLP_GRPC >"$work/$variant_name.yaml"
  valgrind --tool=callgrind --callgrind-out-file="$work/$variant_name.callgrind" \
    "$bin/tollgate" serve --config "$work/$variant_name.yaml" --log-format json \
    >"$work/$variant_name.log" 2>&1 &
  vg=$!
  pids+=($vg)
  wait_ready $((PORT + 1)) "$work/$variant_name.log"
  load 200 1 >/dev/null
  callgrind_control --zero $vg >/dev/null
  summary=$(load "$rate" $(((requests + rate - 1) / rate)))
  # Thread totals since the zeroing, summed; the last column of each `Th` line.
  counted=$(callgrind_control -e $vg 2>/dev/null | awk '/^ *Th/ {gsub(",", "", $NF); n += $NF} END {print n}')
  kill $vg
  wait $vg 2>/dev/null || true
  [ "$(failed "$summary")" = 0 ] || { echo "$variant_name: requests failed: $summary" >&2; exit 1; }
  sent=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["requests"])' "$summary")
  echo "$variant_name $counted $sent" >>"$work/counts"
  echo "$variant_name done" >&2
done

python3 - "$work/counts" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
base = int(rows[0][1]) / int(rows[0][2])
print(f"{'variant':12s} {'requests':>8s} {'instructions/req':>16s} {'ratio':>6s}")
for name, counted, sent in rows:
    per = int(counted) / int(sent)
    print(f"{name:12s} {int(sent):8d} {per:16.0f} {per / base:6.3f}")
PY
