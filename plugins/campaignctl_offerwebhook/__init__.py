"""Built-in offer sink ``offer_webhook``: issued promo codes and bonus accruals
POSTed as JSON to a point of sale or loyalty system.

Options:
  url:         where to POST (https, or http for a local test server)
  headers:     extra request headers, e.g. {Authorization: "Bearer ${env:LOYALTY_TOKEN}"}
  batch_size:  offers per request (default 500)
  concurrency, timeout, ca_file: as every HTTP channel (campaignctl.http_sender)

Each request's body is ``{"offers": [ExportedOffer as JSON, ...]}`` with an
``Idempotency-Key`` header (sha256 of the batch's keys). The receiver must
accept an offer whose key it has already seen as a no-op: after a crash between
its answer and campaignctl's record of it, the same offers are POSTed again.
A 2xx answer means taken; 429, 5xx and time-outs are retried (three tries, the
provider's Retry-After honoured up to 30 s), then export fails and apply stops
before sending. Header values (credentials) never appear in errors.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from campaignctl.contracts import ExportedOffer, unknown_options
from campaignctl.hookspecs import hookimpl
from campaignctl.http_sender import HTTP_OPTIONS, HttpBatchSender, HttpRequest, sender_from_options

__version__ = "0.1.0"

TRIES = 3
MAX_WAIT = 30.0


@dataclass
class WebhookOfferSink:
    url: str
    headers: Mapping[str, str]
    batch_size: int
    http: HttpBatchSender
    sleep: Callable[[float], None] = time.sleep

    def export(self, offers: Sequence[ExportedOffer]) -> None:
        requests = [self._request(offers[start:start + self.batch_size]) for start in range(0, len(offers), self.batch_size)]
        for attempt in range(1, TRIES + 1):
            results = self.http.send(requests)
            failed = [(request, result) for request, result in zip(requests, results) if result.status != "sent"]
            if not failed:
                return
            permanent = [result for _, result in failed if result.status == "permanent_failure"]
            if permanent or attempt == TRIES:
                worst = (permanent or [result for _, result in failed])[0]
                raise RuntimeError(f"{len(failed)} of {len(requests)} request(s) to the offer webhook failed, e.g. {worst.error}")
            wait = max([result.retry_after or 0.0 for _, result in failed] + [float(attempt)])
            self.sleep(min(MAX_WAIT, wait))
            requests = [request for request, _ in failed]

    def _request(self, batch: Sequence[ExportedOffer]) -> HttpRequest:
        body = json.dumps({"offers": [offer.as_dict() for offer in batch]}, ensure_ascii=False, sort_keys=True).encode("utf-8")
        idempotency = hashlib.sha256("\n".join(offer.key for offer in batch).encode()).hexdigest()
        headers = {**self.headers, "content-type": "application/json", "idempotency-key": idempotency}
        return HttpRequest(idempotency, self.url, "POST", headers, body)

    def close(self) -> None:
        self.http.close()


_OPTIONS = ("url", "headers", "batch_size", *HTTP_OPTIONS)


def create_sink(config, project_root: Path) -> WebhookOfferSink:
    """The factory registered as ``offer_webhook``."""
    options = dict(config.options)
    what = "offer_webhook sink"
    if problem := unknown_options(options, _OPTIONS, what):
        raise ValueError(problem)
    url = str(options.get("url") or "")
    if not (url.startswith("https://") or url.startswith(("http://localhost", "http://127.0.0.1", "http://[::1]"))):
        raise ValueError(f"{what}: option 'url' must be an https URL (http only for localhost), not {url.split('?')[0]!r}")
    headers = options.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValueError(f"{what}: option 'headers' must map header names to text values")
    batch_size = options.get("batch_size", 500)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= 10_000:
        raise ValueError(f"{what}: option 'batch_size' must be a whole number from 1 to 10000, not {batch_size!r}")
    http = sender_from_options(options, Path(project_root), what=what, default_concurrency=4)
    return WebhookOfferSink(url, {str(k).lower(): v for k, v in headers.items()}, batch_size, http)


@hookimpl
def register_offer_sinks(register) -> None:
    register("offer_webhook", create_sink)
