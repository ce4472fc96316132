#!/usr/bin/env bash
# A/B of Tollgate configurations: the same load through several Tollgates that differ only by a
# config fragment each, in alternating rounds, with medians and ratios against the first. For
# questions finer than the side-by-side harness resolves in its three rounds (what tracing
# costs, say): on this machine, closed-loop rounds of one build agree within about 1% in a quiet
# spell (and spread 30% in a noisy one: read the per-round ratios).
#
#   loadtest/ab.sh NAME=FRAGMENT [NAME=FRAGMENT ...]
#       FRAGMENT: a YAML file appended to the base config (server, admin, no auth, one route
#       `fast` to the mock), or `-` for none. `@OTLP_GRPC@` in it becomes the live receiver's
#       gRPC address (rotel, on core 1 with the mock and the load generator). A line
#       `# body: JSON` in it is the request that variant gets (default: a short chat request).
#   ROUNDS=6 SECONDS_PER_ROUND=4 LOAD="closed --connections 64"   (defaults)
#   LOAD="open --rate 10000"   fixed rate: compare CPU per request only
#
# Example: what full sampling costs against none.
#   printf 'tracing:\n  otlp: {endpoint: "http://@OTLP_GRPC@"}\n' > full.yaml
#   loadtest/ab.sh plain=- full=full.yaml
set -euo pipefail
caller_dir=$(pwd)  # fragments are named relative to where the script was run from
cd "$(dirname "$0")/.."
root=$(pwd)
[ $# -ge 2 ] || { sed -n '2,18p' "$0"; exit 2; }

rounds=${ROUNDS:-6}
secs=${SECONDS_PER_ROUND:-4}
load=${LOAD:-closed --connections 64}
cargo build --release --workspace --bins -q
bin=$root/target/release

# shellcheck source=loadtest/lib.sh
source "$root/loadtest/lib.sh"  # $work, $pids, cleanup on exit

MOCK=19401 OTLP_GRPC=19431 OTLP_HTTP=19432 FIRST_PORT=19410
start_mock_and_receiver $MOCK $OTLP_GRPC $OTLP_HTTP

names=()
declare -A tg_pid tg_port tg_admin tg_body
port=$FIRST_PORT
for spec in "$@"; do
  parse_variant "$spec"
  name=$variant_name
  mkdir -p "$work/$name"
  variant_config $port $MOCK "$variant_fragment" 127.0.0.1:$OTLP_GRPC >"$work/$name/config.yaml"
  taskset -c 0 "$bin/tollgate" serve --config "$work/$name/config.yaml" --log-format json \
    >"$work/$name/out.log" 2>&1 &
  tg_pid[$name]=$!
  pids+=($!)
  tg_port[$name]=$port
  tg_admin[$name]=$((port + 1))
  tg_body[$name]=$variant_body
  names+=("$name")
  port=$((port + 2))
done

# Ready when every admin listener says so.
for name in "${names[@]}"; do
  wait_ready "${tg_admin[$name]}" "$work/$name/out.log"
done

# CPU nanoseconds of every thread of a process.
cpu_ns() {
  local total=0 task
  for task in /proc/"$1"/task/*/schedstat; do total=$((total + $(cut -d' ' -f1 "$task"))); done
  echo $total
}
for round in $(seq "$rounds"); do
  order=("${names[@]}")
  [ $((round % 2)) = 0 ] && mapfile -t order < <(printf '%s\n' "${names[@]}" | tac)
  for name in "${order[@]}"; do
    before=$(cpu_ns "${tg_pid[$name]}")
    # shellcheck disable=SC2086 # LOAD is words on purpose
    result=$(taskset -c 1 "$bin/tollgate-load" --addr "127.0.0.1:${tg_port[$name]}" --body "${tg_body[$name]}" \
      $load --seconds "$secs" | tail -n1)
    after=$(cpu_ns "${tg_pid[$name]}")
    dropped=$(curl -s "http://127.0.0.1:${tg_admin[$name]}/metrics" |
      awk '/^tollgate_trace_spans_dropped_total/ {n += $2} END {print n + 0}')
    echo "$name $((after - before)) $dropped $result" >>"$work/rounds"
  done
  echo "round $round done" >&2
done

python3 - "$work/rounds" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, cpu, dropped, result = line.split(" ", 3)
    r = json.loads(result)
    n = r["requests"]
    if r["errors"]:
        sys.exit(f"{name}: {r['errors']} failed requests")
    rows.setdefault(name, []).append((r["throughput_rps"], int(cpu) / 1e3 / n, r["latency"]["p99_ms"], int(dropped)))
base = None
print(f"{'variant':12s} {'req/s':>9s} {'ratio':>6s} {'cpu us/req':>10s} {'ratio':>6s} {'paired':>6s} {'p99 ms':>7s}  per-round cpu ratio to the first  spans dropped, all rounds")
for name, v in rows.items():
    rps = statistics.median(x[0] for x in v)
    cpu = statistics.median(x[1] for x in v)
    p99 = statistics.median(x[2] for x in v)
    if base is None:
        base = (rps, cpu, [x[1] for x in v])
    per_round = [round(x[1] / b, 3) for x, b in zip(v, base[2])]
    # `paired`: the median of the per-round ratios (each round's variants ran back to back).
    paired = statistics.median(per_round)
    print(f"{name:12s} {rps:9.0f} {rps / base[0]:6.3f} {cpu:10.2f} {cpu / base[1]:6.3f} {paired:6.3f} {p99:7.2f}  {per_round}  {v[-1][3]}")
PY
