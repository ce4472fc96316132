#!/usr/bin/env bash
# Quick closed-loop comparison in ONE run: wrk -> mock directly, and wrk -> Tollgate -> mock.
# Rounds alternate between the two targets so machine noise hits both alike; the summary
# prints medians over rounds and the Tollgate/direct ratios. Loopback only; every process
# started here is stopped on exit.
#
#   loadtest/quick.sh [ROUNDS] [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
seconds=${2:-10}
conns=${3:-64}
mock_port=${MOCK_PORT:-18080}
api_port=${API_PORT:-18081}
admin_port=${ADMIN_PORT:-18082}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --workspace --bins -q

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The proxy under test gets core 0; the mock and the load generator share core 1.
taskset -c 1 target/release/tollgate-mock --listen "127.0.0.1:$mock_port" --tokens 16 --threads 1 >"$work/mock.out" &
pids+=($!)
cat >"$work/tollgate.yaml" <<YAML
server:
  listen: 127.0.0.1:$api_port
admin:
  listen: 127.0.0.1:$admin_port
auth:
  enabled: false
providers:
  mock:
    type: openai
    base_url: http://127.0.0.1:$mock_port/v1
routes:
  m:
    provider: mock
YAML
TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/tollgate serve --config "$work/tollgate.yaml" --log-format json >"$work/access.log" &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && grep -q listening "$work/mock.out" && break
  sleep 0.1
done

# A 1 KB non-streaming chat request.
filler=$(printf 'lorem ipsum dolor sit amet %.0s' $(seq 33))
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"$filler"}]}'
LUA

run() { # target url -> "rps p50_ms p99_ms"
  taskset -c 1 wrk -t1 -c"$conns" -d"${seconds}s" --latency -s "$work/post.lua" "$1" >"$work/wrk.out"
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps=$2 }
    $1=="50%" { p50=ms($2) } $1=="99%" { p99=ms($2) }
    END { printf "%s %.3f %.3f\n", rps, p50, p99 }' "$work/wrk.out"
}

echo "round target      req/s     p50_ms   p99_ms"
for r in $(seq "$rounds"); do
  d=$(run "http://127.0.0.1:$mock_port/v1/chat/completions"); echo "$r direct   $d" | tee -a "$work/direct"
  t=$(run "http://127.0.0.1:$api_port/v1/chat/completions"); echo "$r tollgate $t" | tee -a "$work/tollgate"
done
median() { sort -g | awk '{v[NR]=$1} END { print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2 }'; }
for col in 3 4 5; do
  d=$(awk -v c=$col '{print $c}' "$work/direct" | median)
  t=$(awk -v c=$col '{print $c}' "$work/tollgate" | median)
  name=$(echo "req/s p50_ms p99_ms" | cut -d' ' -f$((col-2)))
  awk -v n="$name" -v d="$d" -v t="$t" 'BEGIN { printf "median %-7s direct %10.3f  tollgate %10.3f  ratio tollgate/direct %.2f\n", n, d, t, t/d }'
done
errors=$(grep -c '"status":200' "$work/access.log" || true)
echo "access-log lines with status 200: $errors"
