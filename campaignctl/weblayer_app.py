"""The HTTP side of web layers, as a plain ASGI app to mount into `campaignctl
serve` (under /layers, say) or run on its own:

    GET  /snippet.js                   the snippet the retailer's site includes
    GET  /rules?visitor=TOKEN&m=KEY    the layers for a signed-in visitor (TOKEN) and/or
                                       for one who arrived by a campaign link (KEY: the
                                       link's message key, checked against the ledger)
    POST /events                       {"key", "sig", "type": "impression"|"click"} from the
                                       snippet -> an "opened" / "clicked" outcome on the key

The site is another origin, so answers carry CORS headers; the snippet sends
events as text/plain beacons, which need no preflight. Outcomes are recorded
once per message and type (a reload is not a second open). The state store is
used from one worker thread (SQLite connections belong to their thread).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import parse_qs

from .asgi import read_body
from .state import Outcome, StateStore
from .weblayer import SNIPPET, RulesDirectory, event_signature, expired, utc_now, visitor_token

log = logging.getLogger("campaignctl.weblayer")

OUTCOME_OF_EVENT = {"impression": "opened", "click": "clicked"}
MAX_EVENT_BYTES = 4096
CORS = (("access-control-allow-origin", "*"), ("access-control-allow-methods", "GET, POST, OPTIONS"),
        ("access-control-allow-headers", "content-type"), ("access-control-max-age", "86400"))
NO_STORE = (("cache-control", "no-store"),)

Answer = tuple[int, tuple[tuple[str, str], ...], bytes]


class WebLayerApp:
    """``prefix`` is the path it is mounted at ("/layers"); requests outside it get 404."""

    def __init__(self, rules: RulesDirectory, store: StateStore | None = None, *, prefix: str = "",
                 clock: Callable[[], datetime] = utc_now, worker: ThreadPoolExecutor | None = None):
        self.rules = rules
        self.prefix = prefix.rstrip("/")
        self._store = store
        self._clock = clock
        self._worker = worker or ThreadPoolExecutor(max_workers=1, thread_name_prefix="campaignctl-weblayer")
        self._snippet = SNIPPET.read_bytes()

    @classmethod
    def for_channel(cls, project: Any, channel: str, environ: Mapping[str, str] | None = None, *, prefix: str = "/layers") -> "WebLayerApp":
        """The app for a project's web_layer channel: its rules directory and
        secret from the channel's options, the project's state store opened in
        the app's worker thread."""
        from .connect import open_senders, open_state_store

        sender = open_senders(project, [channel], environ)[channel]
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="campaignctl-weblayer")
        store = worker.submit(open_state_store, project, environ).result()
        return cls(sender.rules, store, prefix=prefix, worker=worker)

    def close(self) -> None:
        if self._store is not None:
            self._worker.submit(self._store.close).result()
        self._worker.shutdown()

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        body, too_large = await read_body(receive, MAX_EVENT_BYTES)
        body = b"" if too_large else body  # an oversized event is no event
        path = scope["path"]
        if self.prefix and (path == self.prefix or path.startswith(self.prefix + "/")):
            path = path[len(self.prefix):]
        elif self.prefix:
            path = ""
        try:
            status, headers, content = await self.respond(scope["method"], path, scope.get("query_string", b"").decode("latin-1"), body)
        except Exception:  # noqa: BLE001 - the visitor learns nothing; the log names the route
            log.exception("web layer %s %s failed", scope["method"], path.split("?")[0])
            status, headers, content = 500, (("content-type", "text/plain"),), b"internal error"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers + CORS]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else content})

    async def respond(self, method: str, path: str, query: str, body: bytes) -> Answer:
        """The answer to one request below the mount point (for a host app that
        does its own ASGI plumbing)."""
        if method == "OPTIONS":
            return 204, (), b""
        if path == "/snippet.js" and method in ("GET", "HEAD"):
            return 200, (("content-type", "text/javascript; charset=utf-8"), ("cache-control", "public, max-age=300")), self._snippet
        if path == "/rules" and method in ("GET", "HEAD"):
            return await self._in_worker(self._rules, parse_qs(query))
        if path == "/events" and method == "POST":
            return await self._in_worker(self._event, body)
        return 404, (("content-type", "text/plain"),), b"not found"

    async def _in_worker(self, function: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, functools.partial(function, *args))

    # ------------------------------------------------------------------ routes

    def _rules(self, query: Mapping[str, list[str]]) -> Answer:
        now = self._clock()
        layers = {layer["key"]: layer for layer in self.rules.read(_first(query, "visitor"))}
        arrived = self._arrival(_first(query, "m"))
        if arrived:
            customer, campaign = arrived
            layers.update((layer["key"], layer) for layer in self.rules.read(visitor_token(self.rules.secret, customer))
                          if layer["campaign"] == campaign)
        live = [layer for layer in layers.values() if not expired(layer, now)]
        return _json(200, {"layers": sorted(live, key=lambda layer: (-layer["priority"], layer["key"]))})

    def _arrival(self, key: str) -> tuple[str, str] | None:
        """(customer, campaign) of the message whose link the visitor followed,
        when the ledger has it: a made-up key shows nobody's layer."""
        if not key or self._store is None or len(key) > 512:
            return None
        rows = self._store.messages([key])
        return (rows[0].customer_id, rows[0].campaign) if rows else None

    def _event(self, body: bytes) -> Answer:
        try:
            event = json.loads(body)
            key, signature, kind = str(event["key"]), str(event["sig"]), OUTCOME_OF_EVENT[event["type"]]
        except (ValueError, KeyError, TypeError):
            return _json(400, {"error": "an event is {\"key\", \"sig\", \"type\": \"impression\"|\"click\"}"})
        if not hmac.compare_digest(signature.encode("utf-8", "replace"), event_signature(self.rules.secret, key).encode("ascii")):
            return _json(403, {"error": "this layer was not handed out here"})
        if self._store is None or not self._store.messages([key]):
            return _json(404, {"error": "no such message in the ledger"})
        if not any(outcome.type == kind for outcome in self._store.outcomes(key)):
            self._store.record_outcomes([Outcome(key, kind, self._clock(), {"via": "web_layer"})])
        return 204, NO_STORE, b""


def _first(query: Mapping[str, list[str]], name: str) -> str:
    values = query.get(name) or [""]
    return values[0]


def _json(status: int, payload: Mapping[str, Any]) -> Answer:
    return status, (("content-type", "application/json"),) + NO_STORE, json.dumps(payload, ensure_ascii=False).encode("utf-8")
