"""Starts real tollgate and tollgate-mock processes on loopback for the SDK tests."""

import hashlib
import json
import os
import socket
import subprocess
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
GATEWAY_BIN = os.environ.get("TOLLGATE_BIN", os.path.join(TARGET, "debug", "tollgate"))
MOCK_BIN = os.environ.get("TOLLGATE_MOCK_BIN", os.path.join(TARGET, "debug", "tollgate-mock"))
# The repository's prompt folder; its templates name the route `demo` as their model.
PROMPTS_DIR = os.path.join(ROOT, "config", "prompts")
CLIENT_KEY = "sk-sdk-test-key"
VERTEX_KEY = "vertex-sdk-test-key"
READY_TIMEOUT_S = 30


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_line(proc, needle):
    """Reads the process's stdout until a line contains `needle` (its readiness signal)."""
    for line in proc.stdout:
        if needle in line:
            return line
    raise RuntimeError(f"process exited before printing {needle!r}")


def start_mock(*args):
    proc = subprocess.Popen(
        [MOCK_BIN, "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = wait_for_line(proc, "listening on")
    return proc, line.strip().rsplit(" ", 1)[1]


@pytest.fixture(scope="session")
def gateway():
    """A gateway with auth on, routing `m` and `demo` to a healthy mock and `broken` to one
    that resets, and the `gemini*` aliases to the healthy mock's Vertex AI surface (express
    key). It serves the repository's prompt templates, `production` being version 1."""
    healthy, healthy_addr = start_mock(
        "--tokens", "6", "--inter-token", "2ms", "--vertex-api-key", VERTEX_KEY
    )
    broken, broken_addr = start_mock("--tokens", "6", "--fault", "reset-after=2")
    api_port, admin_port = free_port(), free_port()
    key_hash = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    with tempfile.NamedTemporaryFile("w", suffix=".key", delete=False) as key_file:
        key_file.write(VERTEX_KEY + "\n")
    config = f"""
server:
  listen: 127.0.0.1:{api_port}
admin:
  listen: 127.0.0.1:{admin_port}
providers:
  healthy:
    type: openai
    base_url: http://{healthy_addr}/v1
  broken:
    type: openai
    base_url: http://{broken_addr}/v1
  vertex:
    type: vertex
    project: sdk-project
    location: us-central1
    base_url: http://{healthy_addr}
    credentials: {{type: api_key, file: {key_file.name}}}
routes:
  m:
    provider: healthy
  demo:
    provider: healthy
  broken:
    provider: broken
  gemini:
    provider: vertex
    upstream_model: gemini-2.5-flash
  gemini-tools:
    versions:
      flash:
        provider: vertex
        upstream_model: gemini-2.5-flash
        headers: {{x-mock-gemini: "tool_call=1"}}
  gemini-quota:
    retry: {{max_attempts: 1}}
    versions:
      flash:
        provider: vertex
        upstream_model: gemini-2.5-flash
        headers: {{x-mock-gemini: "error=RESOURCE_EXHAUSTED:retry=2s"}}
prompts:
  dir: {json.dumps(PROMPTS_DIR)}
  labels:
    support-answer:
      production: 1
tenants:
  - name: sdk
    key_hashes: ["{key_hash}"]
    models: ["*"]
"""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(config)
    proc = subprocess.Popen(
        [GATEWAY_BIN, "serve", "--config", handle.name, "--log-format", "json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_for_line(proc, "tollgate listening")
    yield {"base_url": f"http://127.0.0.1:{api_port}/v1", "key": CLIENT_KEY}
    for process in (proc, healthy, broken):
        process.terminate()
    assert proc.wait(timeout=READY_TIMEOUT_S) == 0, "gateway exits 0 on SIGTERM"
    for process in (healthy, broken):
        process.wait(timeout=READY_TIMEOUT_S)
    os.unlink(handle.name)
    os.unlink(key_file.name)
    # Every line the gateway logged is JSON, and none carries the client key.
    rest = proc.stdout.read()
    for line in rest.splitlines():
        json.loads(line)
        assert CLIENT_KEY not in line
        assert VERTEX_KEY not in line
