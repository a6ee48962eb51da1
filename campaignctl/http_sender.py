"""Sending a batch of HTTP requests for an HTTP-based channel (push, SMS,
messengers): bounded concurrency, keep-alive connections, one SendResult per
message in order, and one way of reading what a provider answered.

A channel turns each OutgoingMessage into an :class:`HttpRequest` (or, when
the message cannot be sent at all, straight into a permanent SendResult) and
hands the list to :meth:`HttpBatchSender.send`. Every answer is classified:

* 2xx: sent;
* 429: temporary, with ``retry_after`` from the Retry-After header (seconds
  or an HTTP date), which ``campaignctl.delivery.deliver`` waits at least
  before its next round;
* 5xx, connection errors and time-outs before the request was sent: temporary;
* a time-out waiting for the answer to a request sent whole: ``in_doubt``
  (the provider may have taken it; FCM, APNs, Web Push and the messengers
  do not de-duplicate, so a resend could deliver it twice), unless the
  sender was made with ``provider_deduplicates=True``;
* any other 4xx: permanent, with the provider's own error text.

A channel passes its own ``interpret`` to read provider specifics (an id in
the body, "UNREGISTERED" meaning the address is gone) and falls back on
:func:`classify` for the rest. Retrying is not done here: ``deliver`` retries
temporary failures in rounds with exponential backoff and jitter.

Secrets never reach a result: errors hold the status and the provider's answer
text, never request headers (credentials) or URLs (a push endpoint is itself a
capability).

Threads (not asyncio) because a channel's ``send`` is called synchronously
and the work is waiting on the network; the threads and their connections are
kept between batches. HTTP/1.1 uses the standard library (fastest here, see
:class:`HttpBatchSender`); HTTP/2 uses httpx[http2], imported only then.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from .contracts import SendResult

SENT = "sent"
TEMPORARY = "temporary_failure"
PERMANENT = "permanent_failure"
IN_DOUBT = "in_doubt"

MAX_ERROR_TEXT = 300  # of a provider's answer kept in the ledger's error column


@dataclass(frozen=True, repr=False)
class HttpRequest:
    """One provider call for one message. ``repr`` leaves headers and body out:
    they carry credentials and the customer's content."""

    key: str  # the message's idempotency key
    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes = b""

    def __repr__(self) -> str:
        return f"HttpRequest(key={self.key!r}, method={self.method!r})"


@dataclass(frozen=True)
class HttpAnswer:
    """What the provider answered to one request."""

    status: int
    headers: Mapping[str, str]  # case-insensitive (httpx.Headers)
    text: str
    http_version: str  # "HTTP/1.1", "HTTP/2"

    def json(self) -> object:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            return None


# A channel's reading of an answer: the SendResult for the request's message.
Interpret = Callable[[HttpRequest, HttpAnswer], SendResult]


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date
    (RFC 9110 10.2.3); None when absent or unreadable, 0 for a date passed."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - (now or datetime.now(timezone.utc))).total_seconds())


def provider_error(answer: HttpAnswer) -> str:
    """The provider's error in a line: status and the start of its answer."""
    text = " ".join(answer.text.split())
    if len(text) > MAX_ERROR_TEXT:
        text = text[:MAX_ERROR_TEXT] + "..."
    return f"HTTP {answer.status}: {text}" if text else f"HTTP {answer.status}"


def classify(key: str, answer: HttpAnswer, *, provider_id: str | None = None, error: str | None = None) -> SendResult:
    """The common reading of an HTTP status (module docstring); ``error``
    replaces the provider's text when the channel has a better one."""
    if 200 <= answer.status < 300:
        return SendResult(key, SENT, provider_id=provider_id)
    error = error or provider_error(answer)
    if answer.status == 429:
        wait = retry_after_seconds(answer.headers.get("retry-after"))
        return SendResult(key, TEMPORARY, provider_id, error, retry_after=wait)
    if answer.status >= 500 or answer.status in (408,):  # 408: the server gave up waiting for us
        return SendResult(key, TEMPORARY, provider_id, error, retry_after=retry_after_seconds(answer.headers.get("retry-after")))
    return SendResult(key, PERMANENT, provider_id, error)


def default_interpret(request: HttpRequest, answer: HttpAnswer) -> SendResult:
    return classify(request.key, answer)


def transport_error(key: str, exc: Exception, *, in_doubt: bool = False) -> SendResult:
    """No answer: temporary, or ``in_doubt`` when the request went out whole
    before the wait ran out. The text is the error's kind and message (socket
    and httpx errors carry neither URL nor headers)."""
    cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if in_doubt:
        return SendResult(key, IN_DOUBT, error=f"no answer after the request was sent, the provider may have it ({cause})")
    return SendResult(key, TEMPORARY, error=cause)


class HttpBatchSender:
    """Sends batches of HttpRequests, at most ``concurrency`` at a time, over
    keep-alive connections kept for the sender's life.

    HTTP/1.1 goes through the standard library's http.client, one keep-alive
    connection per worker thread and origin: measured on loopback it is 3-5x
    faster than a shared httpx pool, whose lock contention made more threads
    slower (docs/benchmarks.md). ``http2=True`` uses httpx[http2] instead (APNs
    accepts nothing else), multiplexing the concurrent requests over one
    connection per origin. ``verify``: True, False, or an ssl.SSLContext (tests
    trust a local CA). ``provider_deduplicates``: the provider drops a repeated
    request (an idempotency key), so a time-out waiting for its answer is safe
    to retry (temporary) instead of in doubt.
    """

    def __init__(
        self,
        *,
        concurrency: int = 16,
        timeout: float = 10.0,
        http2: bool = False,
        verify: bool | ssl.SSLContext = True,
        user_agent: str = "campaignctl",
        provider_deduplicates: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.concurrency = concurrency
        self.provider_deduplicates = provider_deduplicates
        self._transport = (_Http2Transport if http2 else _Http1Transport)(concurrency, timeout, _ssl_context(verify), user_agent)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="campaignctl-http")
        self._closed = False

    def send(self, items: Sequence[HttpRequest | SendResult], interpret: Interpret = default_interpret) -> list[SendResult]:
        """One SendResult per item, in order. An item that is already a
        SendResult (a message the channel could not build a request for) is
        passed through; nothing raises for a single message."""
        if self._closed:
            raise RuntimeError("this HTTP sender is closed")
        futures = {index: self._pool.submit(self._one, item, interpret)
                   for index, item in enumerate(items) if isinstance(item, HttpRequest)}
        return [futures[index].result() if index in futures else item for index, item in enumerate(items)]

    def call(self, request: HttpRequest) -> HttpAnswer:
        """One request on the calling thread, for a channel's own calls (an
        OAuth token exchange); raises TransportFailure when nothing answers."""
        if self._closed:
            raise RuntimeError("this HTTP sender is closed")
        return self._transport.call(request)

    def _one(self, request: HttpRequest, interpret: Interpret) -> SendResult:
        try:
            answer = self._transport.call(request)
        except TransportFailure as failure:  # time-outs, refused or reset connections, protocol errors
            return transport_error(request.key, failure.cause, in_doubt=failure.unanswered and not self.provider_deduplicates)
        try:
            return interpret(request, answer)
        except Exception as exc:  # noqa: BLE001 - a channel's reading failing must not lose the other messages
            # The provider did answer: keep the status's plain reading (a 2xx is sent).
            fallback = classify(request.key, answer)
            return SendResult(request.key, fallback.status, None, fallback.error or f"unreadable answer: {type(exc).__name__}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True)
            self._transport.close()


class TransportFailure(Exception):
    """No answer from the provider (a time-out, a refused or broken
    connection); ``cause`` says why. ``unanswered``: the whole request went
    out and the wait for the answer timed out, so the provider may have it."""

    def __init__(self, cause: Exception, *, unanswered: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.unanswered = unanswered


def _ssl_context(verify: bool | ssl.SSLContext) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# A reused keep-alive connection the server had already closed fails like this
# before any answer byte: the request never reached the application, so it is
# sent once more on a fresh connection (as urllib3 and browsers do).
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class _Http1Transport:
    """http.client connections, one per worker thread and origin."""

    def __init__(self, concurrency: int, timeout: float, context: ssl.SSLContext, user_agent: str) -> None:
        self.timeout = timeout
        self.context = context
        self.user_agent = user_agent
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def call(self, request: HttpRequest) -> HttpAnswer:
        url = urlsplit(request.url)
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        headers = {"user-agent": self.user_agent, **request.headers}
        for attempt in (1, 2):
            connection, reused = self._connection(url.scheme, url.netloc)
            written = False  # request() returns once the whole request is on the wire
            try:
                connection.request(request.method, target, body=request.content, headers=headers)
                written = True
                response = connection.getresponse()
                body = response.read()
            except _STALE_CONNECTION as exc:
                self._drop(url.scheme, url.netloc)
                if reused and attempt == 1:
                    continue
                raise TransportFailure(exc) from None
            except (OSError, http.client.HTTPException) as exc:  # time-outs are OSErrors too
                self._drop(url.scheme, url.netloc)
                # A connect or write time-out: the provider has no whole request. A read time-out: it may.
                raise TransportFailure(exc, unanswered=written and isinstance(exc, TimeoutError)) from None
            if response.will_close:
                self._drop(url.scheme, url.netloc)
            return HttpAnswer(response.status, {k.lower(): v for k, v in response.getheaders()}, _text(body, response), "HTTP/1.1")
        raise AssertionError("unreachable")

    def _connection(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to the origin, and whether it was used before."""
        connections = self._local.__dict__.setdefault("connections", {})
        connection = connections.get((scheme, netloc))
        if connection is not None:
            return connection, True
        if scheme == "https":
            connection = http.client.HTTPSConnection(netloc, timeout=self.timeout, context=self.context)
        elif scheme == "http":
            connection = http.client.HTTPConnection(netloc, timeout=self.timeout)
        else:
            raise TransportFailure(ValueError(f"unsupported URL scheme {scheme!r}"))
        connections[(scheme, netloc)] = connection
        with self._lock:
            self._all.append(connection)
        return connection, False

    def _drop(self, scheme: str, netloc: str) -> None:
        connection = self._local.__dict__.get("connections", {}).pop((scheme, netloc), None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        with self._lock:
            for connection in self._all:
                connection.close()
            self._all.clear()


class _Http2Transport:
    """One httpx[http2] client: concurrent requests become streams of one
    connection per origin."""

    def __init__(self, concurrency: int, timeout: float, context: ssl.SSLContext, user_agent: str) -> None:
        import httpx  # only HTTP/2 channels pay for importing it

        self._httpx = httpx
        self.client = httpx.Client(
            http2=True,
            verify=context,
            timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"user-agent": user_agent},
            follow_redirects=False,  # a redirect is an answer to classify, not to follow with credentials
        )

    def call(self, request: HttpRequest) -> HttpAnswer:
        try:
            response = self.client.request(request.method, request.url, headers=dict(request.headers), content=request.content)
        except self._httpx.TransportError as exc:
            # Only a failure to connect (or to get a connection from the pool)
            # surely sent nothing. Any other error on an HTTP/2 stream may come
            # after the server took the request: a read time-out, but also a
            # connection closed under in-flight streams (httpcore drops the
            # connection when one stream times out), which APNs does not de-duplicate.
            httpx = self._httpx
            nothing_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.LocalProtocolError,
                                            httpx.UnsupportedProtocol))
            raise TransportFailure(exc, unanswered=not nothing_sent) from None
        return HttpAnswer(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.text, response.http_version)

    def close(self) -> None:
        self.client.close()


def _text(body: bytes, response: http.client.HTTPResponse) -> str:
    charset = response.headers.get_content_charset() or "utf-8"
    return body.decode(charset, errors="replace")


# Options every HTTP channel takes, read by :func:`sender_from_options`.
HTTP_OPTIONS = ("concurrency", "timeout", "ca_file")


def sender_from_options(options: Mapping[str, object], project_root: Path, *, what: str, http2: bool = False,
                        default_concurrency: int = 16) -> HttpBatchSender:
    """An HttpBatchSender from a channel's options: ``concurrency`` (requests
    in flight), ``timeout`` (seconds) and ``ca_file`` (a PEM bundle to trust
    instead of the system's, for a provider behind a corporate proxy or a test
    server; relative to the project)."""
    concurrency = options.get("concurrency", default_concurrency)
    timeout = options.get("timeout", 10)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= 1000:
        raise ValueError(f"{what}: option 'concurrency' must be a whole number from 1 to 1000, not {concurrency!r}")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ValueError(f"{what}: option 'timeout' must be a positive number of seconds, not {timeout!r}")
    verify: bool | ssl.SSLContext = True
    if ca_file := options.get("ca_file"):
        from .options import project_path

        path = project_path(ca_file, project_root)
        if not path.is_file():
            raise ValueError(f"{what}: option 'ca_file': no such file {path}")
        verify = ssl.create_default_context(cafile=str(path))
    return HttpBatchSender(concurrency=concurrency, timeout=float(timeout), http2=http2, verify=verify)
