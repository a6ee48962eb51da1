"""What the HTTP peers (channel_peers, push_peers, sms_peers) share: a
threaded HTTP server on 127.0.0.1 and the way they read a request and write
a JSON answer."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def start_server(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A server on a free port, serving in a daemon thread until ``stop_server``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def stop_server(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


def read_request(handler: BaseHTTPRequestHandler) -> tuple[dict[str, str], bytes]:
    """The request's headers (names lower-cased) and its body."""
    length = int(handler.headers.get("Content-Length") or 0)
    return {k.lower(): v for k, v in handler.headers.items()}, handler.rfile.read(length)


def write_answer(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: Any) -> None:
    """``body`` as JSON (bytes as they are), Content-Type application/json unless ``headers`` say otherwise."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", **headers}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
