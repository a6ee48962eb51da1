"""Real far ends for the messenger channels: an HTTP server on localhost that
answers as the Telegram Bot API or the WhatsApp Cloud API document (the answer
function says how), recording every request and what it really delivered."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

BOT_TOKEN = "123456:TEST-bot-token"
WA_TOKEN = "EAAG-test-token"
APP_SECRET = "test-app-secret"


@dataclass
class Peer:
    """A real HTTP server; ``answer(path, headers, body)`` -> (status, body, delay seconds)."""

    answer: Callable[[str, dict, Any], tuple[int, Any, float]]
    requests: list[tuple[str, dict, Any]] = field(default_factory=list)
    delivered: Counter = field(default_factory=Counter)  # what a customer really got: answered 200, in time
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with peer.lock:
                    peer.requests.append((self.path, headers, body))
                    status, answer, delay = peer.answer(self.path, headers, body)
                if delay:  # the client gives up first: the peer drops the request, as a provider that never got it
                    time.sleep(delay)
                    self.close_connection = True
                    return
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if status == 200:
                    with peer.lock:
                        peer.delivered[json.dumps(body.get("chat_id", body.get("to")))] += 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def telegram_ok(path, headers, body):
    return 200, {"ok": True, "result": {"message_id": 1000 + int(body["chat_id"]), "chat": {"id": body["chat_id"]}, "text": body["text"]}}, 0


TEMPLATES = {"game_whatsapp": {"name": "uyut_game", "language": "ru",
                               "body": "{{1}}, a prize is waiting for you at Uyut: pick one of three boxes {{2}}",
                               "url_button": "https://uyut.example/game?m={{1}}"}}


def wa_ok(path, headers, body):
    return 200, {"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                 "messages": [{"id": f"wamid.{body['to']}"}]}, 0
