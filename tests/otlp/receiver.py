"""A small but real OTLP trace receiver for Tollgate's black-box tests.

It accepts trace exports over OTLP/gRPC (TraceService/Export) and OTLP/HTTP
(POST /v1/traces, protobuf body, optionally gzip-encoded) and decodes them with
the official generated protobuf definitions from the `opentelemetry-proto`
package, so a test sees exactly what a real collector would receive.

Output (stdout, one line each, flushed):
  listening grpc=127.0.0.1:PORT http=127.0.0.1:PORT    once, after binding
  {"protocol": ..., "trace_id": ..., ...}              one JSON line per span
  {"export": "grpc"|"http", "spans": N}                after each request's spans

Failure injection for tests: --delay-ms N (slow collector), --http-status CODE
(answer CODE instead of 200), --grpc-status CODE (abort with that gRPC status).
Rejected exports are still printed, so a test can count delivery attempts.
"""
import argparse
import gzip
import json
import signal
import sys
import threading
import time
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as ts_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

_out_lock = threading.Lock()


def emit(lines):
    """Print lines atomically (one export's lines stay together) and flush."""
    with _out_lock:
        try:
            for line in lines:
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass  # the test stopped reading; keep serving


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attrs(v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None  # string/bool/int/double, or unset


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def enum_name(enum, value, prefix):
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return str(value)


def span_lines(protocol, req):
    lines = []
    for rs in req.resource_spans:
        resource = attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                lines.append(json.dumps({
                    "protocol": protocol, "resource": resource,
                    "scope": ss.scope.name, "scope_version": ss.scope.version,
                    "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "trace_state": s.trace_state, "name": s.name,
                    "kind": enum_name(trace_pb2.Span.SpanKind, s.kind, "SPAN_KIND_"),
                    "start_ns": s.start_time_unix_nano, "end_ns": s.end_time_unix_nano,
                    "attributes": attrs(s.attributes),
                    "events": [{"name": e.name, "time_ns": e.time_unix_nano,
                                "attributes": attrs(e.attributes)} for e in s.events],
                    "status_code": enum_name(trace_pb2.Status.StatusCode, s.status.code,
                                             "STATUS_CODE_"),
                    "status_message": s.status.message, "flags": s.flags,
                }))
    lines.append(json.dumps({"export": protocol, "spans": len(lines)}))
    return lines


class TraceService(ts_grpc.TraceServiceServicer):
    def __init__(self, delay_s, status):
        self.delay_s, self.status = delay_s, status

    def Export(self, request, context):
        emit(span_lines("grpc", request))
        time.sleep(self.delay_s)
        if self.status:
            context.abort(self.status, "receiver configured to fail")
        return ts_pb2.ExportTraceServiceResponse()


class HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as OTLP exporters expect
    delay_s, status = 0.0, 200

    def log_message(self, *args):  # stdout/stderr belong to the test protocol
        pass

    def reply(self, code, body=b"", ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError("negative Content-Length")
            return self.rfile.read(length)
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # optional trailers, then a blank line
            pass
        return b"".join(chunks)

    def do_POST(self):
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return self.reply(400, b"bad request body\n")
        if self.path.split("?")[0] != "/v1/traces":
            return self.reply(404, b"not found\n")
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/x-protobuf":
            return self.reply(415, b"only application/x-protobuf is supported\n")
        req = ts_pb2.ExportTraceServiceRequest()
        try:
            if self.headers.get("Content-Encoding", "").strip().lower() == "gzip":
                body = gzip.decompress(body)
            req.ParseFromString(body)
        except (DecodeError, OSError, EOFError, zlib.error):
            return self.reply(400, b"cannot decode ExportTraceServiceRequest\n")
        emit(span_lines("http", req))
        time.sleep(self.delay_s)
        if self.status != 200:
            return self.reply(self.status, b"receiver configured to fail\n")
        self.reply(200, ts_pb2.ExportTraceServiceResponse().SerializeToString(),
                   "application/x-protobuf")


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grpc", default="127.0.0.1:0", help="host:port of the gRPC listener")
    p.add_argument("--http", default="127.0.0.1:0", help="host:port of the HTTP listener")
    p.add_argument("--delay-ms", type=int, default=0, help="wait this long before answering")
    p.add_argument("--http-status", type=int, default=200, help="HTTP status to answer")
    p.add_argument("--grpc-status", type=int, default=0, help="gRPC status code to abort with")
    args = p.parse_args()
    codes = {c.value[0]: c for c in grpc.StatusCode if c.value[0]}  # 0 (OK) = no failure
    if args.grpc_status and args.grpc_status not in codes:
        p.error(f"unknown gRPC status code {args.grpc_status}")
    delay_s = args.delay_ms / 1000.0

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    host, port = split_addr(args.grpc)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    service = TraceService(delay_s, codes.get(args.grpc_status))
    ts_grpc.add_TraceServiceServicer_to_server(service, grpc_server)
    grpc_port = grpc_server.add_insecure_port(f"{host}:{port}")  # raises if it can't bind
    grpc_server.start()

    HttpHandler.delay_s, HttpHandler.status = delay_s, args.http_status
    http_server = ThreadingHTTPServer(split_addr(args.http), HttpHandler)
    http_server.daemon_threads = True
    threading.Thread(target=http_server.serve_forever, daemon=True).start()

    emit([f"listening grpc={host}:{grpc_port} http=%s:%d" % http_server.server_address[:2]])
    stop.wait()  # until SIGTERM/SIGINT
    http_server.shutdown()
    grpc_server.stop(grace=0.5).wait()


if __name__ == "__main__":
    main()
