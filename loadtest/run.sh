#!/usr/bin/env bash
# Side-by-side load harness: the same workloads against the mock directly, Tollgate in front of
# it, and nginx in front of it, in ONE run, plus Tollgate with OTLP tracing on (exporting to a
# live collector, rotel). Prints one table (with Tollgate/nginx ratios) and writes JSON under
# loadtest/results/. Loopback only; stops every process it started; bounded (about four and a
# half minutes).
#
#   loadtest/run.sh            full run
#   QUICK=1 loadtest/run.sh    shorter phases, for a smoke check
#   CHECK=1 ...                exit non-zero if any request failed or any stream lost events
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

secs=${SECONDS_PER_PHASE:-4}
rounds=${ROUNDS:-3}
idle_streams=${IDLE_STREAMS:-5000}
[ "${QUICK:-}" = 1 ] && { secs=2; rounds=1; idle_streams=500; }

# --- tools -----------------------------------------------------------------------------------
if ! command -v nginx >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
fi
cargo build --release --workspace --bins -q
bin=$root/target/release
ulimit -n "$(ulimit -Hn)"  # 5,000 streams need about 10,000 descriptors in the proxy

# shellcheck source=loadtest/lib.sh
source "$root/loadtest/lib.sh"  # $work, $pids, cleanup on exit
mkdir -p loadtest/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$root/loadtest/results/$stamp.jsonl"
: >"$out"

# The OTLP receiver for the traced phases (rotel).
find_rotel
rotel_version="rotel $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("rotel"))') ($("$rotel_bin" --version))"

# --- ports and processes ---------------------------------------------------------------------
# Core 0: the proxy under test. Core 1: the mocks, the load generator and the OTLP receiver.
MOCK_FAST=19001 MOCK_STREAM=19002 MOCK_IDLE=19003
TG=19010 TG_ADMIN=19011
TG_TRACED=19012 TG_TRACED_ADMIN=19013  # tracing, sampling ratio 1.0
TG_1PCT=19014 TG_1PCT_ADMIN=19015      # tracing, sampling ratio 0.01
NGX_FAST=19021 NGX_STREAM=19022 NGX_IDLE=19023
OTLP_GRPC=19031 OTLP_HTTP=19032

start_mock() { # port args...
  local port=$1; shift
  taskset -c 1 "$bin/tollgate-mock" --listen "127.0.0.1:$port" --threads 1 "$@" >"$work/mock-$port.out" &
  pids+=($!)
}
# The fast mock also answers on three more ports: the routed scenario's four endpoints are
# one process, so it measures load balancing, not extra upstream processes.
start_mock $MOCK_FAST --tokens 16 --also-listen 127.0.0.1:19004 --also-listen 127.0.0.1:19005 --also-listen 127.0.0.1:19006
start_mock $MOCK_STREAM --tokens 32 --inter-token 5ms
start_mock $MOCK_IDLE --tokens 3 --inter-token 120s

# rotel in the foreground (its --daemon mode detaches and keeps a pid file), so it is one of
# our pids: SIGTERM at cleanup stops it ("Shutdown signal received."). It binds both ports
# before it logs "Starting Rotel."; the readiness loop below sends it an empty export. The
# blackhole exporter accepts every batch and discards it: only receiving is measured.
taskset -c 1 "$rotel_bin" start --otlp-grpc-endpoint 127.0.0.1:$OTLP_GRPC --otlp-http-endpoint 127.0.0.1:$OTLP_HTTP \
  --exporter blackhole >"$work/rotel.log" 2>&1 &
rotel_pid=$!
pids+=($rotel_pid)

key=sk-loadtest-key
key_hash=$(printf %s "$key" | "$bin/tollgate" hash-key)
# The configs sit in a directory of their own, as a mounted ConfigMap would: Tollgate watches
# that directory for reloads, and the access log written next to it would wake the watcher.
# All three are written before any Tollgate starts.
mkdir -p "$work/config"
tollgate_config() { # api-port admin-port
  cat <<YAML
server:
  listen: 127.0.0.1:$1
admin:
  listen: 127.0.0.1:$2
providers:
  fast: {type: openai, base_url: "http://127.0.0.1:$MOCK_FAST/v1"}
  stream: {type: openai, base_url: "http://127.0.0.1:$MOCK_STREAM/v1"}
  idle: {type: openai, base_url: "http://127.0.0.1:$MOCK_IDLE/v1"}
  replicas:
    type: openai
    endpoints: ["http://127.0.0.1:$MOCK_FAST/v1", "http://127.0.0.1:19004/v1", "http://127.0.0.1:19005/v1", "http://127.0.0.1:19006/v1"]
routes:
  fast: {provider: fast}
  # The routed scenario: three weighted versions over one provider with four endpoints.
  routed:
    versions:
      v1: {provider: replicas, weight: 90}
      v2: {provider: replicas, weight: 9}
      v3: {provider: replicas, weight: 1}
  stream: {provider: stream}
  idle: {provider: idle, timeouts: {first_token: 10s, idle: 300s, total: 600s}}
tenants:
  - name: loadtest
    key_hashes: ["$key_hash"]
    models: ["*"]
YAML
}
tracing_config() { # sampling-ratio: the same Tollgate, exporting spans to rotel over gRPC
  cat <<YAML
tracing:
  otlp:
    endpoint: http://127.0.0.1:$OTLP_GRPC
  sampling_ratio: $1
YAML
}
tollgate_config $TG $TG_ADMIN >"$work/config/tollgate.yaml"
{ tollgate_config $TG_TRACED $TG_TRACED_ADMIN; tracing_config 1.0; } >"$work/config/tollgate-traced.yaml"
{ tollgate_config $TG_1PCT $TG_1PCT_ADMIN; tracing_config 0.01; } >"$work/config/tollgate-traced-1pct.yaml"
start_tollgate() { # config-name -> its pid in $started
  taskset -c 0 "$bin/tollgate" serve --config "$work/config/$1.yaml" --log-format json >"$work/$1-access.log" &
  started=$!
  pids+=($started)
}
start_tollgate tollgate; tollgate_pid=$started
start_tollgate tollgate-traced; traced_pid=$started
start_tollgate tollgate-traced-1pct; traced_1pct_pid=$started

mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 19000; }
http {
  access_log $work/nginx/logs/access.log;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_buffering off;
  proxy_read_timeout 600s;
  upstream fast { server 127.0.0.1:$MOCK_FAST; keepalive 256; }
  upstream stream { server 127.0.0.1:$MOCK_STREAM; keepalive 256; }
  upstream idle { server 127.0.0.1:$MOCK_IDLE; keepalive 256; }
  server { listen 127.0.0.1:$NGX_FAST; location / { proxy_pass http://fast; } }
  server { listen 127.0.0.1:$NGX_STREAM; location / { proxy_pass http://stream; } }
  server { listen 127.0.0.1:$NGX_IDLE; location / { proxy_pass http://idle; } }
}
NGINX
taskset -c 0 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -e "$work/nginx/logs/error.log" &
nginx_pid=$!
pids+=($nginx_pid)

for _ in $(seq 200); do
  ready=1
  for port in $MOCK_FAST $MOCK_STREAM $MOCK_IDLE $NGX_FAST; do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || ready=0
  done
  for admin in $TG_ADMIN $TG_TRACED_ADMIN $TG_1PCT_ADMIN; do
    curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null || ready=0
  done
  # An empty ExportTraceServiceRequest over OTLP/HTTP: 200 once rotel serves.
  curl -sf -o /dev/null -X POST -H 'content-type: application/x-protobuf' --data-binary '' \
    "http://127.0.0.1:$OTLP_HTTP/v1/traces" || ready=0
  [ $ready = 1 ] && break
  sleep 0.05
done
kill -0 $rotel_pid 2>/dev/null || { echo "rotel did not start:" >&2; cat "$work/rotel.log" >&2; exit 1; }

# --- measuring a process ---------------------------------------------------------------------
proc_tree() { # pid -> the pid and its children (nginx master and worker)
  echo "$1"; pgrep -P "$1" || true
}
cpu_ns() { # pid -> nanoseconds on CPU of all its threads and children
  local total=0 p t
  for p in $(proc_tree "$1"); do
    for t in /proc/"$p"/task/*/schedstat; do
      [ -r "$t" ] && total=$((total + $(cut -d' ' -f1 "$t")))
    done
  done
  echo $total
}
rss_kb() { # pid field(VmRSS|VmHWM) -> kB summed over the process tree
  local total=0 p v
  for p in $(proc_tree "$1"); do
    v=$(awk -v f="$2:" '$1==f {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo $total
}

proxy_pid() {
  case $1 in
    tollgate) echo $tollgate_pid ;; traced) echo $traced_pid ;; traced_1pct) echo $traced_1pct_pid ;;
    nginx) echo $nginx_pid ;; *) echo "" ;;
  esac
}
addr() { # target scenario-kind(fast|stream|idle)
  case $1:$2 in
    direct:fast) echo 127.0.0.1:$MOCK_FAST ;; direct:stream) echo 127.0.0.1:$MOCK_STREAM ;; direct:idle) echo 127.0.0.1:$MOCK_IDLE ;;
    tollgate:*) echo 127.0.0.1:$TG ;; traced:*) echo 127.0.0.1:$TG_TRACED ;; traced_1pct:*) echo 127.0.0.1:$TG_1PCT ;;
    nginx:fast) echo 127.0.0.1:$NGX_FAST ;; nginx:stream) echo 127.0.0.1:$NGX_STREAM ;; nginx:idle) echo 127.0.0.1:$NGX_IDLE ;;
  esac
}

filler=$(printf 'lorem ipsum dolor sit amet %.0s' $(seq 33))
body_fast="{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"$filler\"}],\"temperature\":0.2}"
body_routed=${body_fast/\"model\":\"fast\"/\"model\":\"routed\"}
body_stream="{\"model\":\"stream\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"$filler\"}]}"
body_idle='{"model":"idle","stream":true,"messages":[{"role":"user","content":"wait"}]}'

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo | tr -d '"\\')
nginx_version=$(nginx -v 2>&1 | sed 's/^nginx version: //' | tr -d '"\\')
echo "{\"scenario\":\"machine\",\"target\":\"-\",\"cores\":$(nproc),\"cpu\":\"$cpu_model\",\"kernel\":\"$(uname -r)\",\"nginx\":\"$nginx_version\",\"tollgate_commit\":\"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\",\"otlp_receiver\":\"$rotel_version\"}" >>"$out"

for target in tollgate nginx; do
  pid=$(proxy_pid $target)
  echo "{\"scenario\":\"idle_rss\",\"target\":\"$target\",\"rss_kb\":$(rss_kb "$pid" VmRSS)}" >>"$out"
done

load() { # target kind body args... -> JSON line of the load generator
  local target=$1 kind=$2 body=$3; shift 3
  taskset -c 1 "$bin/tollgate-load" --addr "$(addr "$target" "$kind")" --body "$body" \
    --header "authorization: Bearer $key" "$@"
}

run_phase() { # scenario kind body args...   (targets: $TARGETS, default all three)
  local scenario=$1 kind=$2 body=$3; shift 3
  for target in ${TARGETS:-direct tollgate nginx}; do
    local pid before after result
    pid=$(proxy_pid $target)
    before=$([ -n "$pid" ] && cpu_ns "$pid" || echo 0)
    result=$(load "$target" "$kind" "$body" "$@" | tail -n 1)
    after=$([ -n "$pid" ] && cpu_ns "$pid" || echo 0)
    echo "{\"scenario\":\"$scenario\",\"target\":\"$target\",\"cpu_seconds\":$(awk -v a="$after" -v b="$before" 'BEGIN{printf "%.4f", (a-b)/1e9}'),\"result\":$result}" >>"$out"
    echo "  $scenario $target done" >&2
  done
}

span_counters() { # admin port -> "exported dropped_queue_full dropped_export_failed"
  curl -sf "http://127.0.0.1:$1/metrics" | awk '
    $1 == "tollgate_trace_spans_exported_total" { e = $2 }
    $1 == "tollgate_trace_spans_dropped_total{reason=\"queue_full\"}" { q = $2 }
    $1 == "tollgate_trace_spans_dropped_total{reason=\"export_failed\"}" { f = $2 }
    END { printf "%d %d %d\n", e, q, f }' ||
    { echo "cannot read the span counters on 127.0.0.1:$1/metrics" >&2; return 1; }
}
# Spans leave in batches from Tollgate's exporter thread, the last one up to export_interval
# (1 s) after the load stops. Wait past that, then until two reads 0.5 s apart agree (at
# most 8 s), so the phase's CPU includes exporting all of its spans and its counts are
# final. Few reads: each scrape is Tollgate CPU that the untraced phases do not pay.
settle_export() { # admin port
  local last now polls=0
  sleep 1.3
  last=$(span_counters "$1")
  while [ $polls -lt 13 ]; do
    sleep 0.5
    polls=$((polls + 1))
    now=$(span_counters "$1")
    [ "$now" = "$last" ] && break
    last=$now
  done
}
traced_phase() { # scenario target(traced|traced_1pct) admin-port sampling-ratio load-args...
  local scenario=$1 target=$2 admin=$3 ratio=$4 pid before after rx_before rx_after result settle_from e0 q0 f0 e1 q1 f1
  shift 4
  pid=$(proxy_pid "$target")
  read -r e0 q0 f0 <<<"$(span_counters "$admin")"
  before=$(cpu_ns "$pid")
  rx_before=$(cpu_ns $rotel_pid)
  result=$(load "$target" fast "$body_fast" "$@" --seconds "$secs" | tail -n 1)
  settle_from=$(date +%s%N)
  settle_export "$admin"
  after=$(cpu_ns "$pid")
  rx_after=$(cpu_ns $rotel_pid)
  read -r e1 q1 f1 <<<"$(span_counters "$admin")"
  echo "{\"scenario\":\"$scenario\",\"target\":\"tollgate\",\"sampling_ratio\":$ratio,\"cpu_seconds\":$(awk -v a="$after" -v b="$before" 'BEGIN{printf "%.4f", (a-b)/1e9}'),\"receiver_cpu_seconds\":$(awk -v a="$rx_after" -v b="$rx_before" 'BEGIN{printf "%.4f", (a-b)/1e9}'),\"spans\":{\"exported\":$((e1 - e0)),\"dropped_queue_full\":$((q1 - q0)),\"dropped_export_failed\":$((f1 - f0))},\"settle_seconds\":$(awk -v a="$(date +%s%N)" -v b="$settle_from" 'BEGIN{printf "%.1f", (a-b)/1e9}'),\"result\":$result}" >>"$out"
  echo "  $scenario tollgate done (spans exported $((e1 - e0)), dropped $((q1 - q0 + f1 - f0)))" >&2
}

# Every timed scenario runs in $rounds rounds, targets alternating within each, so a noisy
# moment lands on one round of one target; the report takes each metric's median over rounds.
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds" >&2
  for rate in 500 1000 2000; do
    run_phase "open_${rate}" fast "$body_fast" open --rate $rate --seconds "$secs"
  done
  # What routing costs: the same load through 3 versions and 4 endpoints, Tollgate only. It
  # runs before the single-upstream phases in odd rounds and after them in even ones, so
  # neither always follows the other.
  routed_phase() {
    TARGETS=tollgate run_phase closed_64_routed fast "$body_routed" closed --connections 64 --seconds "$secs"
  }
  # What tracing costs: the same load through the traced Tollgates (every request sampled,
  # and 1 %). Mirrored the same way: odd rounds traced, 1 %, routed, closed_64; even rounds
  # closed_64, routed, 1 %, traced.
  traced_all_phase() { traced_phase closed_64_traced traced $TG_TRACED_ADMIN 1.0 closed --connections 64; }
  traced_1pct_phase() { traced_phase closed_64_traced_1pct traced_1pct $TG_1PCT_ADMIN 0.01 closed --connections 64; }
  if [ $((round % 2)) = 1 ]; then traced_all_phase; traced_1pct_phase; routed_phase; fi
  run_phase closed_64 fast "$body_fast" closed --connections 64 --seconds "$secs"
  if [ $((round % 2)) = 0 ]; then routed_phase; traced_1pct_phase; traced_all_phase; fi
  # The same comparison at a fixed 10,000 requests/s, which every Tollgate (and the receiver
  # beside the load generator) keeps up with: both sides do the same work per second, so
  # the CPU ratio is tracing's own cost, with no throughput difference folded in.
  fixed_rate=(open --rate 10000)
  traced_fixed() {
    traced_phase open_10k_traced traced $TG_TRACED_ADMIN 1.0 "${fixed_rate[@]}"
    traced_phase open_10k_traced_1pct traced_1pct $TG_1PCT_ADMIN 0.01 "${fixed_rate[@]}"
  }
  if [ $((round % 2)) = 1 ]; then traced_fixed; fi
  TARGETS="direct tollgate" run_phase open_10k fast "$body_fast" "${fixed_rate[@]}" --seconds "$secs"
  if [ $((round % 2)) = 0 ]; then traced_fixed; fi
  run_phase stream_32x5ms stream "$body_stream" open --rate 100 --seconds "$secs" --expect-events 33
done

echo "== $idle_streams idle streams" >&2
for target in direct tollgate nginx; do
  pid=$(proxy_pid $target)
  fifo="$work/idle-$target"
  mkfifo "$fifo"
  load "$target" idle "$body_idle" idle --streams "$idle_streams" --hold-seconds 3 >"$fifo" &
  loader=$!
  rss=0 holding=0 result="{}"
  while read -r line; do
    case $line in
      *holding*) holding=$line; [ -n "$pid" ] && rss=$(rss_kb "$pid" VmRSS) ;;
      *) result=$line ;;
    esac
  done <"$fifo"
  wait $loader || true
  echo "{\"scenario\":\"idle_streams\",\"target\":\"$target\",\"rss_kb\":$rss,\"result\":$result}" >>"$out"
  echo "  idle_streams $target done ($holding)" >&2
done

for target in tollgate nginx; do
  echo "{\"scenario\":\"peak_rss\",\"target\":\"$target\",\"rss_kb\":$(rss_kb "$(proxy_pid $target)" VmHWM)}" >>"$out"
done

# CHECK=1: fail the run unless every target answered every request and held every stream.
if [ "${CHECK:-}" = 1 ]; then
  python3 loadtest/report.py "$out" --check "$idle_streams"
else
  python3 loadtest/report.py "$out"
fi
