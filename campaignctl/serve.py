"""`campaignctl serve`: the HTTP side of sent messages, as a plain ASGI app.

    GET  /u/TOKEN                a confirmation page; a GET never unsubscribes (link scanners follow GETs)
    POST /u/TOKEN                unsubscribe: RFC 8058 one-click (List-Unsubscribe=One-Click), or the page's button
    GET  /c/TOKEN                record a click, 302 to the target the token signs (nowhere else)
    GET  /o/TOKEN.gif            record an open, answer a 1x1 GIF
    POST /webhooks/CHANNEL       provider outcomes: the channel plugin's own format (WebhookParser),
                                 or campaignctl's JSON events signed with tracking.webhook_secret
    GET  /webhooks/CHANNEL       a provider's address check (SubscriptionVerifier, e.g. WhatsApp's hub.challenge)
    GET  /healthz                "ok"

Outcomes go to the project's state store through one worker thread that owns
the connection (SQLite connections belong to the thread that opened them), so
the event loop never waits on the database. Tokens are secrets of a kind (each
one unsubscribes someone): the access log names routes, never paths.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import html
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Mapping, Sequence
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from .asgi import read_body
from .connect import open_senders, open_state_store
from .contracts import SubscriptionVerifier, WebhookParser
from .model import Project
from .outcomes import import_outcomes
from .state import Outcome, utc_now
from .tokens import EXPIRED, Rejected, TokenPayload
from .tracking import open_signer, webhook_secret

log = logging.getLogger("campaignctl.serve")

SIGNATURE_HEADER = "x-campaignctl-signature"  # "sha256=" + hex HMAC-SHA256 of the raw body
MAX_BODY_BYTES = 1 << 20
# The smallest transparent GIF: 1x1, one colour, transparent.
PIXEL_GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
NO_CACHE = (("cache-control", "no-store, no-cache, must-revalidate, private"), ("pragma", "no-cache"), ("expires", "0"))
PAGE_HEADERS = NO_CACHE + (("referrer-policy", "no-referrer"), ("x-robots-tag", "noindex"), ("x-content-type-options", "nosniff"))


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # below base_url's path
    query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default=())


def page(status: int, title: str, text: str, form: bool = False) -> Response:
    """A small HTML page; ``form`` adds the button that POSTs the unsubscribe."""
    button = (
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<input type="hidden" name="source" value="page"><button type="submit">Unsubscribe</button></form>'
        if form else ""
    )
    body = (
        f'<!doctype html><html><head><meta charset="utf-8"><meta name="robots" content="noindex">'
        f'<meta name="viewport" content="width=device-width"><title>{html.escape(title)}</title></head>'
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{button}</body></html>"
    )
    return Response(status, body.encode("utf-8"), (("content-type", "text/html; charset=utf-8"),) + PAGE_HEADERS)


def plain(status: int, text: str) -> Response:
    return Response(status, text.encode("utf-8"), (("content-type", "text/plain; charset=utf-8"),) + NO_CACHE)


def as_json(status: int, payload: Mapping[str, Any]) -> Response:
    return Response(status, json.dumps(payload).encode("utf-8"), (("content-type", "application/json"),) + NO_CACHE)


def refused_page(rejected: Rejected) -> Response:
    if rejected.reason == EXPIRED:
        return page(410, "This link has expired", "Use the link in a more recent message from us.")
    return page(400, "This link is not valid", "Check that the whole link was copied from the message.")


class TrackingServer:
    """The ASGI app. Secrets are resolved and the state store opened when it is
    made, so a misconfiguration fails `campaignctl serve` before it listens."""

    def __init__(self, project: Project, environ: Mapping[str, str] | None = None, *, clock: Callable[[], datetime] = utc_now):
        self._project = project
        self._environ = environ
        self._clock = clock
        self._signer = open_signer(project, environ)
        self._webhook_secret = webhook_secret(project, environ)
        self._prefix = urlsplit(project.tracking.base_url).path.rstrip("/") if project.tracking else ""
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="campaignctl-state")
        self._store = self._worker.submit(open_state_store, project, environ).result()
        self._webhook_parsers: dict[str, Any] = {}  # channel -> its sender when it parses webhooks, else None
        self._layers = self._web_layers(project, environ)

    def _web_layers(self, project: Project, environ: Mapping[str, str] | None) -> Any:
        """The site's pop-up rules, snippet and events under /layers/, when a
        channel publishes web layers; it shares this server's store and worker."""
        from .connect import open_senders
        from .weblayer_app import WebLayerApp

        names = [name for name, channel in project.channels.items() if channel.plugin == "web_layer"]
        if not names:
            return None
        rules = open_senders(project, names[:1], environ)[names[0]].rules
        return WebLayerApp(rules, self._store, prefix=self._prefix + "/layers", worker=self._worker)

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self._layers is not None and self._below_prefix(scope["path"]).startswith("/layers/"):
            await self._layers(scope, receive, send)
            return
        body, too_large = await read_body(receive, MAX_BODY_BYTES)
        request = Request(scope["method"], self._below_prefix(scope["path"]), scope.get("query_string", b"").decode("latin-1"),
                          {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}, body)
        try:
            response = plain(413, "request body too large") if too_large else await self.respond(request)
        except Exception:  # the traceback names code, not tokens; the client learns nothing
            log.exception("%s %s failed", request.method, route_of(request.path))
            response = plain(500, "internal error")
        log.info("%s %s %d", request.method, route_of(request.path), response.status)
        await send({"type": "http.response.start", "status": response.status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]})
        await send({"type": "http.response.body", "body": b"" if request.method == "HEAD" else response.body})

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _below_prefix(self, path: str) -> str:
        """The path below base_url's own path, so a proxy may pass /mail/u/... unchanged."""
        if self._prefix and (path == self._prefix or path.startswith(self._prefix + "/")):
            return path[len(self._prefix):] or "/"
        return path

    def close(self) -> None:
        def close_all() -> None:
            for sender in self._webhook_parsers.values():
                if sender is not None:
                    sender.close()
            self._store.close()

        self._worker.submit(close_all).result()
        self._worker.shutdown()

    async def _in_worker(self, function: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, functools.partial(function, *args))

    # ------------------------------------------------------------------ routes

    async def respond(self, request: Request) -> Response:
        method, path = request.method, request.path
        if path == "/healthz":
            return plain(200, "ok") if method in ("GET", "HEAD") else _not_allowed("GET, HEAD")
        if path.startswith("/u/"):
            if method == "GET":
                return self._confirmation_page(path[3:])
            if method == "POST":
                return await self._in_worker(self._unsubscribe, path[3:], request)
            return _not_allowed("GET, POST")
        if path.startswith("/c/"):
            return await self._in_worker(self._click, path[3:], request.query) if method == "GET" else _not_allowed("GET")
        if path.startswith("/o/") and path.endswith(".gif"):
            return await self._in_worker(self._open, path[3:-4]) if method == "GET" else _not_allowed("GET")
        if path.startswith("/webhooks/"):
            if method == "GET":
                return await self._in_worker(self._webhook_handshake, path[len("/webhooks/"):], request.query)
            return await self._in_worker(self._webhook, path[len("/webhooks/"):], request) if method == "POST" else _not_allowed("GET, POST")
        return plain(404, "not found")

    def _confirmation_page(self, token: str) -> Response:
        verified = self._signer.verify(token, "unsubscribe", self._clock())
        if not verified:
            return refused_page(verified)
        return page(200, "Unsubscribe?", "You will get no more messages like this one from us.", form=True)

    def _unsubscribe(self, token: str, request: Request) -> Response:
        verified = self._signer.verify(token, "unsubscribe", self._clock())
        if not verified:
            return refused_page(verified)
        fields = form_fields(request.headers.get("content-type", ""), request.body)
        if fields.get("List-Unsubscribe") != "One-Click":
            return page(400, "Nothing was changed", "An unsubscribe request carries List-Unsubscribe=One-Click (RFC 8058).")
        via = "confirmation page" if fields.get("source") == "page" else "one-click"
        if not self._record_once(verified, "unsubscribed", {"via": via}):
            return page(404, "We cannot find this message", "Reply to the message and ask us to unsubscribe you.")
        return page(200, "You are unsubscribed", "You will get no more messages like this one from us.")

    def _click(self, token: str, query: str) -> Response:
        verified = self._signer.verify(token, "click", self._clock())
        if isinstance(verified, Rejected):
            if verified.reason != EXPIRED or verified.payload is None:
                return refused_page(verified)
            # Authentic but past the attribution window: the customer still gets to the shop.
            return _redirect(verified.payload.target or "", query)
        self._record_once(verified, "clicked", {"url": verified.target})
        return _redirect(verified.target or "", query)

    def _open(self, token: str) -> Response:
        verified = self._signer.verify(token, "open", self._clock())
        if isinstance(verified, TokenPayload):
            self._record_once(verified, "opened", {})
        # Always the image: a broken picture in someone's mail helps nobody.
        return Response(200, PIXEL_GIF, (("content-type", "image/gif"),) + NO_CACHE)

    def _record_once(self, token: TokenPayload, kind: str, payload: Mapping[str, Any]) -> bool:
        """Record an outcome of the token's message unless an equal one is there
        (a replayed POST, a reloaded page); False when the ledger has no such message."""
        if not self._store.messages([token.message_key]):
            return False
        earlier = self._store.outcomes(token.message_key)
        if not any(o.type == kind and (kind != "clicked" or o.payload.get("url") == payload.get("url")) for o in earlier):
            self._store.record_outcomes([Outcome(token.message_key, kind, self._clock(), dict(payload))])
        return True

    # ------------------------------------------------------------------ webhooks

    def _webhook(self, channel: str, request: Request) -> Response:
        if channel not in self._project.channels:
            return plain(404, f"no channel {channel!r} in this project")
        parser = self._webhook_parser(channel)
        if parser is not None:
            try:
                outcomes = parser.parse_webhook(request.body, request.headers)
            except PermissionError:
                return plain(401, "the webhook signature does not match")
            except ValueError as exc:
                return plain(400, f"cannot read the webhook: {exc}")
            return as_json(200, self._record_known(outcomes))
        if self._webhook_secret is None:
            return plain(404, "webhooks are not configured: set tracking.webhook_secret")
        if not valid_signature(self._webhook_secret, request.body, request.headers.get(SIGNATURE_HEADER, "")):
            return plain(401, "the webhook signature does not match")
        try:
            events = json.loads(request.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return plain(400, "the body is not JSON")
        events = events.get("events") if isinstance(events, dict) and "events" in events else events
        events = events if isinstance(events, list) else [events]
        rows = ((number, event if isinstance(event, dict) else {"_error": "an event is a JSON object"}) for number, event in enumerate(events, 1))
        result = import_outcomes(self._store, rows)
        return as_json(200, {**result.to_dict(), "invalid": [{"event": n, "error": e} for n, e in result.invalid]})

    def _webhook_handshake(self, channel: str, query: str) -> Response:
        """A provider confirming its webhook address before it posts anything."""
        parser = self._webhook_parser(channel) if channel in self._project.channels else None
        if not isinstance(parser, SubscriptionVerifier):
            return _not_allowed("POST")
        answer = parser.verify_subscription({name: values[0] for name, values in parse_qs(query).items()})
        return plain(200, answer) if answer is not None else plain(403, "the verify token does not match the channel's options.verify_token")

    def _webhook_parser(self, channel: str) -> WebhookParser | None:
        """The channel's sender when its plugin parses its own webhooks; opened once."""
        if channel not in self._webhook_parsers:
            sender = open_senders(self._project, [channel], self._environ)[channel]
            if not isinstance(sender, WebhookParser):
                sender.close()
                sender = None
            self._webhook_parsers[channel] = sender
        return self._webhook_parsers[channel]

    def _record_known(self, outcomes: Sequence[Outcome]) -> dict[str, Any]:
        known = {m.key for m in self._store.messages(sorted({o.message_key for o in outcomes}))}
        recordable = [o for o in outcomes if o.message_key in known]
        recorded = self._store.record_outcomes(recordable) if recordable else 0
        unknown = sorted({o.message_key for o in outcomes} - known)
        return {"recorded": recorded, "repeated": len(recordable) - recorded, "unknown_keys": unknown, "invalid": []}


# --------------------------------------------------------------------------- helpers


def sign_webhook(secret: bytes, body: bytes) -> str:
    """The signature header value a sender of campaignctl-format webhooks sets."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def valid_signature(secret: bytes, body: bytes, header: str) -> bool:
    return hmac.compare_digest(header.strip().encode("latin-1"), sign_webhook(secret, body).encode("ascii"))


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """Fields of a form POST: RFC 8058 senders use multipart/form-data or
    application/x-www-form-urlencoded."""
    if content_type.lower().startswith("multipart/form-data"):
        from email.parser import BytesParser
        from email.policy import HTTP

        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body)
        fields = {}
        for part in message.iter_parts() if message.is_multipart() else ():
            name = part.get_param("name", header="content-disposition")
            if name:
                fields[str(name)] = part.get_content().strip() if part.get_content_maintype() == "text" else ""
        return fields
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0].strip() for name, values in parsed.items()}


def _redirect(target: str, query: str) -> Response:
    """302 to the signed target; the click's own query (``{{ links.game }}?box=2``)
    is added to the target's, which cannot change where it goes."""
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return plain(400, "this link has no valid target")
    merged = "&".join(q for q in (parts.query, query) if q)
    location = quote(urlunsplit(parts._replace(query=merged)), safe=":/?#[]@!$&'()*+,;=%~")
    return Response(302, b"", (("location", location),) + NO_CACHE + (("referrer-policy", "no-referrer"),))


def _not_allowed(allow: str) -> Response:
    return Response(405, b"method not allowed", (("allow", allow), ("content-type", "text/plain; charset=utf-8")))


def route_of(path: str) -> str:
    """The path as logged: the route, never the token."""
    for prefix in ("/u/", "/c/", "/o/"):
        if path.startswith(prefix):
            return prefix + "…"
    return path if path.startswith("/webhooks/") or path == "/healthz" else "(other)"


def uvicorn_server(app: TrackingServer, host: str, port: int) -> Any:
    """The uvicorn server for ``app``. uvicorn's access log is off: it would
    write every token; the app logs routes instead."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False, lifespan="on", server_header=False, log_config=None))


def serve(project: Project, host: str = "127.0.0.1", port: int = 8080, environ: Mapping[str, str] | None = None) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn_server(TrackingServer(project, environ), host, port).run()
