#!/usr/bin/env python3
"""A local OTLP/HTTP receiver for benchmarks: accepts `POST /v1/traces` (protobuf), answers an
empty ExportTraceServiceResponse, and discards the spans. On SIGTERM it prints one JSON line: the
requests and bytes received and the CPU seconds it spent itself, so that a benchmark can report
the receiver's cost apart from the services'.

    scripts/otlp-sink.py [PORT]     # default 4318
"""
import json
import resource
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {"requests": 0, "bytes": 0}
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with lock:
            counts["requests"] += 1
            counts["bytes"] += len(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)

    def stop(*_):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with lock:
            report = dict(counts, cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3))
        print(json.dumps(report), flush=True)
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
