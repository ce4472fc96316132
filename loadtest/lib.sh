# Sourced by run.sh, ab.sh and instructions.sh (after `cd` to the repo root, with $root set).
#
# A work directory and the processes started, all stopped and removed on exit.
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The OTLP receiver the traced runs export to: rotel, a collector written in Rust, from PyPI
# (the wheel ships its binary), installed when missing. Uses the repo's .venv when there is
# one, else a venv in $work. Sets $venv and $rotel_bin.
find_rotel() {
  venv=$root/.venv
  [ -x "$venv/bin/python" ] || { venv=$work/venv; python3 -m venv "$venv"; }
  rotel_bin=$(rotel_agent) || true
  if [ ! -x "$rotel_bin" ]; then
    "$venv/bin/pip" install -q 'rotel==0.0.1a15'
    rotel_bin=$(rotel_agent)
  fi
}
rotel_agent() {
  "$venv/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))' 2>/dev/null
}

# A/B variants (ab.sh, instructions.sh): NAME=FRAGMENT, FRAGMENT a YAML file relative to
# $caller_dir or `-`. Sets $variant_name and $variant_fragment (absolute, or `-`), and
# $variant_body: the request body the load generator sends this variant, from the fragment's
# first line `# body: JSON` (a comment to Tollgate), else the scripts' default chat request.
default_body='{"model":"fast","messages":[{"role":"user","content":"hello there"}]}'
parse_variant() {
  variant_name=${1%%=*}
  variant_fragment=${1#*=}
  [ "$variant_name" != "$1" ] || { echo "not NAME=FRAGMENT: $1" >&2; exit 2; }
  [ "$variant_fragment" = - ] || [ "${variant_fragment:0:1}" = / ] ||
    variant_fragment=$caller_dir/$variant_fragment
  [ "$variant_fragment" = - ] || [ -r "$variant_fragment" ] ||
    { echo "cannot read $variant_fragment" >&2; exit 2; }
  variant_body=
  [ "$variant_fragment" = - ] || variant_body=$(sed -n 's/^# body: //p' "$variant_fragment" | head -n1)
  variant_body=${variant_body:-$default_body}
}

# The base config of an A/B variant (API on PORT, admin on PORT+1, no auth, one route `fast`
# to the mock's OpenAI surface on MOCK_PORT) plus its fragment, `@OTLP_GRPC@` replaced by
# OTLP_ADDR, `@MOCK@` by the mock's address and `@PROMPTS@` by the absolute path of the
# repository's `config/prompts` (for `prompts: {dir: "@PROMPTS@"}`). A fragment with its own
# top-level `providers:` replaces the base's providers and routes, and must define route
# `fast` itself (to compare providers: a `vertex` provider with `base_url: "http://@MOCK@"`
# reaches the mock's Vertex surface; `credentials: {type: api_key, env: LOADTEST_VERTEX_KEY}`
# is set for it).
# Usage: variant_config PORT MOCK_PORT FRAGMENT OTLP_ADDR > config.yaml
variant_config() {
  printf 'server:\n  listen: 127.0.0.1:%s\nadmin:\n  listen: 127.0.0.1:%s\nauth:\n  enabled: false\n' "$1" $(($1 + 1))
  if [ "$3" = - ] || ! grep -q '^providers:' "$3"; then
    printf 'providers:\n  fast: {type: openai, base_url: "http://127.0.0.1:%s/v1"}\nroutes:\n  fast:\n    provider: fast\n' "$2"
  fi
  [ "$3" = - ] || sed -e "s/@OTLP_GRPC@/$4/g" -e "s/@MOCK@/127.0.0.1:$2/g" \
    -e "s|@PROMPTS@|$root/config/prompts|g" "$3"
}
export LOADTEST_VERTEX_KEY=loadtest-key

# Waits until the admin listener on PORT says ready; prints LOG and fails if it never does.
wait_ready() {
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0
    sleep 0.1
  done
  cat "$2" >&2
  return 1
}

# Waits until the receiver's OTLP/HTTP listener on PORT answers.
wait_receiver() {
  for _ in $(seq 100); do
    curl -s -o /dev/null -X POST -H 'content-type: application/x-protobuf' \
      "http://127.0.0.1:$1/v1/traces" && return 0
    sleep 0.1
  done
  echo "the OTLP receiver did not start" >&2
  return 1
}

# The A/B scripts' upstream and collector, on core 1: the mock on MOCK_PORT (one thread, 16
# tokens per answer) and rotel on OTLP_GRPC_PORT and OTLP_HTTP_PORT, ready when it returns.
# Usage: start_mock_and_receiver MOCK_PORT OTLP_GRPC_PORT OTLP_HTTP_PORT (needs $bin)
start_mock_and_receiver() {
  taskset -c 1 "$bin/tollgate-mock" --listen "127.0.0.1:$1" --threads 1 --tokens 16 \
    >"$work/mock.out" &
  pids+=($!)
  find_rotel
  taskset -c 1 "$rotel_bin" start --otlp-grpc-endpoint "127.0.0.1:$2" \
    --otlp-http-endpoint "127.0.0.1:$3" --exporter blackhole >"$work/rotel.log" 2>&1 &
  pids+=($!)
  wait_receiver "$3"
}
