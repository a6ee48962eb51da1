"""campaignctl.http_sender against a real HTTP server on localhost: how answers
are read, that one message never breaks a batch, bounded concurrency and
keep-alive connections."""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from contract.push_peers import Hang, Received, _Server

from campaignctl.contracts import SendResult
from campaignctl.http_sender import HttpBatchSender, HttpRequest, retry_after_seconds


class Scripted:
    """Answers by the request body: b"200", b"429", b"hang" ...; counts concurrency and connections."""

    def __init__(self):
        self.in_flight = 0
        self.most_in_flight = 0
        self.ports: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, request: Received):
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.01)
            what = request.body.decode()
            if what == "hang":
                return Hang(1.0)
            if what == "429s":
                return 429, {"Retry-After": "7"}, {"error": "slow down"}
            if what == "429d":
                return 429, {"Retry-After": format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)}, {}
            status = int(what)
            return status, {}, {"error": {"message": f"answer {status}"}} if status >= 400 else {"id": "p1"}
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def server():
    script = Scripted()
    running = _Server(script)
    yield running, script
    running.stop()


def requests(server, bodies):
    return [HttpRequest(f"k{i}", f"{server.base_url}/send", "POST", {"authorization": "Bearer s3cret-token"}, body.encode())
            for i, body in enumerate(bodies)]


def test_each_answer_is_classified_and_results_keep_the_batch_order(server):
    running, _ = server
    sender = HttpBatchSender(concurrency=4, timeout=0.5)
    bodies = ["200", "201", "429s", "429d", "500", "503", "400", "404", "hang", "200"]
    results = sender.send(requests(running, bodies))
    sender.close()
    assert [r.key for r in results] == [f"k{i}" for i in range(len(bodies))]
    assert [r.status for r in results] == ["sent", "sent", "temporary_failure", "temporary_failure", "temporary_failure",
                                           "temporary_failure", "permanent_failure", "permanent_failure", "in_doubt", "sent"]
    assert results[2].retry_after == 7
    assert 25 <= results[3].retry_after <= 30
    assert results[6].error == 'HTTP 400: {"error": {"message": "answer 400"}}'
    assert "timed out" in results[8].error and "the provider may have it" in results[8].error
    assert not any("s3cret" in (r.error or "") or "127.0.0.1" in (r.error or "") for r in results)


def test_a_refused_connection_fails_temporarily_and_results_pass_through():
    sender = HttpBatchSender(concurrency=2, timeout=1)
    ready = SendResult("ready", "permanent_failure", error="no token")
    results = sender.send([HttpRequest("a", "http://127.0.0.1:9/x", content=b"{}"), ready])
    sender.close()
    assert results[0].status == "temporary_failure" and "Connection" in results[0].error
    assert results[1] is ready


def test_a_request_sent_whole_and_never_answered_is_in_doubt_unless_the_provider_deduplicates(server):
    """The peer read the whole request and then hung: it may have acted on it,
    and resending to a provider that does not de-duplicate could deliver twice."""
    running, _ = server
    plain = HttpBatchSender(concurrency=2, timeout=0.3)
    deduplicating = HttpBatchSender(concurrency=2, timeout=0.3, provider_deduplicates=True)
    [doubtful, fine] = plain.send(requests(running, ["hang", "200"]))
    [retryable] = deduplicating.send(requests(running, ["hang"]))
    plain.close()
    deduplicating.close()
    assert (doubtful.status, fine.status, retryable.status) == ("in_doubt", "sent", "temporary_failure")
    assert "timed out" in retryable.error


def test_a_connect_time_out_is_temporary_because_nothing_was_sent():
    """A listener whose accept queue is full drops new connections' SYNs: the
    connect times out before a byte of the request leaves."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        queued = []
        for _ in range(3):  # fill the accept queue, never accepted
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            queued.append(client)
        time.sleep(0.05)
        sender = HttpBatchSender(concurrency=1, timeout=0.3)
        [result] = sender.send([HttpRequest("k", f"http://127.0.0.1:{port}/send", content=b"{}")])
        sender.close()
        for client in queued:
            client.close()
    assert result.status == "temporary_failure" and "timed out" in result.error


def test_concurrency_is_bounded_and_connections_are_kept_alive(server):
    running, script = server
    sender = HttpBatchSender(concurrency=5, timeout=5)
    connections = []
    original = running.server.process_request

    def counting(request, client_address):
        connections.append(client_address)
        return original(request, client_address)

    running.server.process_request = counting
    for _ in range(3):
        results = sender.send(requests(running, ["200"] * 20))
        assert {r.status for r in results} == {"sent"}
    sender.close()
    assert script.most_in_flight == 5
    assert len(connections) <= 5  # 60 requests over at most one connection per worker


def test_a_connection_the_server_closed_while_idle_is_replaced_without_losing_the_request(server):
    running, _ = server
    running.server.RequestHandlerClass.timeout = 0.2  # the server closes connections idle this long
    sender = HttpBatchSender(concurrency=1, timeout=5)
    assert sender.send(requests(running, ["200"]))[0].status == "sent"
    time.sleep(0.5)
    assert sender.send(requests(running, ["200"]))[0].status == "sent"
    sender.close()


def test_retry_after_reads_seconds_and_http_dates():
    now = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Tue, 24 Nov 2026 12:01:30 GMT", now) == 90
    assert retry_after_seconds("Tue, 24 Nov 2026 11:00:00 GMT", now) == 0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None
