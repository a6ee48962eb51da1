"""Real far ends for the SMS channels: an HTTP SMS gateway that checks the
wire format (``sms_http``) and an SMSC (``smpp``): smpp34's SMPP 3.4 server, a
Rust implementation independent of ours, on localhost. The SMSC reassembles
concatenated messages by their user data headers, as a phone does, and sends
delivery receipts back on the bind. Both record what they really took."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

import smpp34

from campaignctl import sms

from .http_server import start_server, stop_server

GATEWAY_TOKEN = "sms-live-7c1d"


# --------------------------------------------------------------------------- the HTTP gateway


@dataclass
class Gateway:
    """An SMS gateway: ``POST /api/sms`` with a bearer token and JSON
    ``{"messages": [{"phone", "text", "from", "client_ref", "parts"}]}``
    (or the same fields as a form at ``/form``); answers
    ``{"result": {"sms_id": ...}}``. ``faults`` is a queue of what the next
    requests get instead: ("status", code, headers) or ("hang", seconds)."""

    accepted: list[dict] = field(default_factory=list)  # what it took, once per 2xx answer
    requests: int = 0
    connections: int = 0
    faults: deque = field(default_factory=deque)
    concurrent: int = 0
    most_concurrent: int = 0
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "Gateway":
        self.server = start_server(_handler(self))
        return self

    def stop(self) -> None:
        stop_server(self.server)

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def answer(self, path: str, headers: dict, body: bytes) -> tuple[int, dict, dict]:
        with self.lock:
            self.requests += 1
            fault = self.faults.popleft() if self.faults else None
        if fault and fault[0] == "hang":
            time.sleep(fault[1])  # overloaded: the client gives up first, and nothing was taken
            return 503, {}, {"error": "overloaded"}
        if fault:
            return fault[1], fault[2], {"error": "try later"}
        if headers.get("authorization") != f"Bearer {GATEWAY_TOKEN}":
            return 401, {}, {"error": "bad token"}
        if path == "/api/sms":
            assert headers["content-type"] == "application/json; charset=utf-8"
            [sms] = json.loads(body)["messages"]
        elif path == "/form":
            assert headers["content-type"] == "application/x-www-form-urlencoded"
            sms = {name: values[0] for name, values in parse_qs(body.decode("ascii"), strict_parsing=True).items()}
        else:
            return 404, {}, {"error": "no such endpoint"}
        if not sms["phone"].startswith("+7"):
            return 400, {}, {"error": f"unsupported destination {sms['phone']}"}
        with self.lock:
            self.accepted.append(sms)
            # The id names the message, not the arrival: requests run concurrently.
            return 200, {}, {"result": {"sms_id": f"gw-{sms.get('client_ref') or len(self.accepted)}"}}

    def keys(self) -> list[str]:
        return [sms["client_ref"] for sms in self.accepted]


def _handler(gateway: Gateway):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            with gateway.lock:
                gateway.connections += 1

        def do_POST(self):
            with gateway.lock:
                gateway.concurrent += 1
                gateway.most_concurrent = max(gateway.most_concurrent, gateway.concurrent)
            try:
                time.sleep(gateway.delay)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, answer = gateway.answer(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            finally:
                with gateway.lock:
                    gateway.concurrent -= 1
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(data)
            except OSError:
                pass  # the client timed out and left

        def log_message(self, format, *args):
            pass

    return Handler


# --------------------------------------------------------------------------- the SMSC


@dataclass
class Submitted:
    destination: str
    source: str
    esm_class: int
    data_coding: int
    registered_delivery: int
    short_message: bytes


@dataclass
class Smsc:
    """smpp34.Server on 127.0.0.1 in its own event loop. ``refuse[destination]``
    answers that destination's submit_sm with a command_status; ``stat[destination]``
    is the receipt state sent back for it (DELIVRD unless set)."""

    port: int = 0
    submitted: list[Submitted] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    unbinds: int = 0
    refuse: dict[str, int] = field(default_factory=dict)
    stat: dict[str, str] = field(default_factory=dict)
    receipts: bool = True
    ids: list[str] = field(default_factory=list)

    def start(self) -> "Smsc":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(ready),), daemon=True)
        self.thread.start()
        assert ready.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._task.cancel)
        self.thread.join(10)

    async def _serve(self, ready: threading.Event) -> None:
        self._task = asyncio.current_task()
        self._pending: set[asyncio.Task] = set()
        server = smpp34.Server(host="127.0.0.1", port=self.port, system_id="TESTSMSC")
        await server.start()
        ready.set()
        sessions = {}
        try:
            while True:
                event = await server.next()
                if isinstance(event, smpp34.Esme):
                    sessions[event.session_id] = event
                    self.binds.append(event.system_id)
                elif isinstance(event, smpp34.Unbound):
                    self.unbinds += 1
                elif isinstance(event, smpp34.SubmitSmEvent):
                    await self._submit(event, sessions[event.session_id])
        except asyncio.CancelledError:
            await server.stop()

    async def _submit(self, event, esme) -> None:
        if event.destination_addr in self.refuse:
            event.reject(self.refuse[event.destination_addr])
            return
        self.submitted.append(Submitted(event.destination_addr, event.source_addr, event.esm_class, event.data_coding,
                                        event.registered_delivery, event.short_message))
        message_id = f"{len(self.submitted) + 0xA000:X}"  # hex ids, as many SMSCs give
        self.ids.append(message_id)
        event.accept(message_id=message_id)
        if self.receipts and event.registered_delivery & 1:
            stat = self.stat.get(event.destination_addr, "DELIVRD")
            text = f"id:{int(message_id, 16)} sub:001 dlvrd:001 submit date:2611241000 done date:2611241001 stat:{stat} err:000 text:"
            # The receipt writes the id in decimal; sent aside so the SMSC keeps reading submits meanwhile.
            self._pending.add(asyncio.create_task(self._receipt(esme, event.destination_addr, event.source_addr, text.encode())))

    async def _receipt(self, esme, source: str, destination: str, text: bytes) -> None:
        try:
            await esme.deliver_sm(source_addr=source, destination_addr=destination, esm_class=0x04, short_message=text)
        except smpp34.SmppError:
            pass  # the ESME unbound first: a real SMSC would keep it for the next bind

    def texts(self) -> dict[str, list[str]]:
        """destination -> whole texts, concatenated parts reassembled by UDH (reference, total, sequence)."""
        whole: dict[str, list[str]] = defaultdict(list)
        partial: dict[tuple[str, int, int], dict[int, str]] = defaultdict(dict)
        for s in self.submitted:
            if s.esm_class & 0x40:
                header_length = s.short_message[0]
                header, payload = s.short_message[1:1 + header_length], s.short_message[1 + header_length:]
                assert header[:2] == b"\x00\x03", header  # IE concatenated short messages, 8-bit reference
                reference, total, sequence = header[2], header[3], header[4]
                assert 1 <= sequence <= total
                partial[(s.destination, reference, total)][sequence] = decode(s.data_coding, payload)
                if len(partial[(s.destination, reference, total)]) == total:
                    parts = partial.pop((s.destination, reference, total))
                    whole[s.destination].append("".join(parts[n] for n in range(1, total + 1)))
            else:
                whole[s.destination].append(decode(s.data_coding, s.short_message))
        assert not partial, f"parts never completed: {dict(partial)}"
        return dict(whole)


def decode(data_coding: int, payload: bytes) -> str:
    """One part's payload alone: it must decode by itself (no cut escape or surrogate pair)."""
    if data_coding == 8:
        assert len(payload) % 2 == 0 and len(payload) <= 134
        return payload.decode("utf-16-be")  # strict: a lone surrogate fails here
    assert data_coding == 0 and len(payload) <= 160 and not payload.endswith(b"\x1b")
    return sms.decode_gsm7(payload)
