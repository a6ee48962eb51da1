"""The delivery core (campaignctl.delivery) on each real state store (a SQLite
file, a PostgreSQL schema) and the real outbox channel, with small senders that
fail on purpose."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from campaignctl import plugins
from campaignctl.contracts import OutgoingMessage, SendResult
from campaignctl.delivery import (
    ALREADY_SENT,
    FAILED_PERMANENT,
    FAILED_TEMPORARY,
    IN_DOUBT,
    NOT_SENT,
    RECOVERED,
    SENT,
    Backoff,
    DueMessage,
    LookupSender,
    deliver,
)
from campaignctl.model import Channel, PluginConfig
from campaignctl.state import MessageStatus, NewMessage


def due(n: int, channel: str = "email", cost: float = 0.5) -> DueMessage:
    message = OutgoingMessage(f"spring/v1/{n}/0/w1", "spring", str(n), channel, f"{n}@example.com", {"subject": "Spring"})
    return DueMessage(message, step=0, cost=cost)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    """Every delivery test runs on each state store."""
    if request.param == "sqlite":
        store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
    else:
        from test_state import pgstate

        options = {"dsn": request.getfixturevalue("postgres_dsn"), "schema": request.getfixturevalue("postgres_schema")}
        store = pgstate().create_store(PluginConfig("pgstate", options), tmp_path)
    yield store
    store.close()


def outbox(root: Path, channel: str = "email"):
    return plugins.registry().channels["outbox"](Channel(channel, "outbox", channel, 0.5, {}), root)


def outbox_keys(root: Path, channel: str = "email") -> list[str]:
    path = root / "out" / f"{channel}.jsonl"
    return [json.loads(line)["key"] for line in path.read_text().splitlines()] if path.exists() else []


class Recorder:
    """Records every sleep instead of sleeping."""

    def __init__(self):
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


class FlakySender:
    """Fails chosen keys temporarily a number of times, refuses others for good."""

    def __init__(self, temporary: dict[str, int] | None = None, permanent: set[str] = frozenset()):
        self.temporary = dict(temporary or {})
        self.permanent = permanent
        self.calls: list[list[str]] = []
        self.delivered: list[str] = []

    def send(self, messages):
        self.calls.append([m.key for m in messages])
        return [self._one(m) for m in messages]

    def _one(self, message):
        if message.key in self.permanent:
            return SendResult(message.key, "permanent_failure", error="mailbox does not exist")
        if self.temporary.get(message.key, 0) > 0:
            self.temporary[message.key] -= 1
            return SendResult(message.key, "temporary_failure", error="429 too many requests")
        self.delivered.append(message.key)
        return SendResult(message.key, "sent", provider_id=f"p-{message.key}")

    def close(self):
        pass


class ExplodingSender:
    """A provider whose connection drops mid-batch: whether it took the batch is unknown."""

    def __init__(self):
        self.calls = 0

    def send(self, messages):
        self.calls += 1
        raise ConnectionResetError("connection reset by peer")

    def close(self):
        pass


def test_every_message_is_sent_once_and_a_rerun_sends_nothing(store, tmp_path):
    messages = [due(n) for n in range(1200)]
    progress = []
    report = deliver(store, {"email": outbox(tmp_path)}, messages, batch_size=500, on_progress=lambda done, total: progress.append((done, total)))
    assert report.counts == {"email": {SENT: 1200}}
    assert report.cost == pytest.approx(600.0) and report.in_doubt == () and report.errors == ()
    assert progress == [(500, 1200), (1000, 1200), (1200, 1200)]
    assert sorted(outbox_keys(tmp_path)) == sorted(m.key for m in messages) == store.message_keys(status="sent")

    again = deliver(store, {"email": outbox(tmp_path)}, messages)
    assert again.counts == {"email": {ALREADY_SENT: 1200}} and again.cost == 0
    assert len(outbox_keys(tmp_path)) == 1200


def test_temporary_failures_are_retried_with_exponential_backoff_and_jitter(store):
    messages = [due(n) for n in range(5)]
    sender = FlakySender(temporary={messages[1].key: 3, messages[3].key: 1})
    sleep = Recorder()
    report = deliver(store, {"email": sender}, messages, max_attempts=5, backoff=Backoff(initial=2, multiplier=3, maximum=10),
                     sleep=sleep, rng=random.Random(7))
    assert report.counts == {"email": {SENT: 5}}
    assert sender.calls[1:] == [[messages[1].key, messages[3].key], [messages[1].key], [messages[1].key]]
    assert len(sleep.sleeps) == 3
    for seconds, ceiling in zip(sleep.sleeps, [2, 6, 10]):  # 2, 2*3, 2*9 capped at 10
        assert ceiling / 2 <= seconds <= ceiling
    assert {m.key: m.attempts for m in store.messages([messages[1].key, messages[3].key, messages[0].key])} == {
        messages[1].key: 4, messages[3].key: 2, messages[0].key: 1,
    }


def test_backoff_jitters_between_half_and_all_of_the_capped_delay():
    rng, backoff = random.Random(1), Backoff(initial=1, multiplier=2, maximum=30)
    for retry, ceiling in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (20, 30)]:
        delays = [backoff.delay(retry, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # really jittered


def test_a_message_still_failing_after_max_attempts_is_left_for_a_later_run(store):
    message = due(1)
    sender = FlakySender(temporary={message.key: 4})
    report = deliver(store, {"email": sender}, [message], max_attempts=3, sleep=Recorder())
    assert report.counts == {"email": {FAILED_TEMPORARY: 1}}
    row = store.messages([message.key])[0]
    assert (row.status, row.attempts, row.error) == (MessageStatus.FAILED_TEMPORARY, 3, "429 too many requests")

    later = deliver(store, {"email": sender}, [message], max_attempts=3, sleep=Recorder())
    assert later.counts == {"email": {SENT: 1}}
    assert sender.delivered == [message.key]


def test_permanent_failures_are_recorded_and_never_retried(store):
    messages = [due(1), due(2)]
    sender = FlakySender(permanent={messages[0].key})
    report = deliver(store, {"email": sender}, messages, sleep=Recorder())
    assert report.counts == {"email": {FAILED_PERMANENT: 1, SENT: 1}}
    assert store.messages([messages[0].key])[0].error == "mailbox does not exist"
    again = deliver(store, {"email": sender}, messages)
    assert again.counts == {"email": {FAILED_PERMANENT: 1, ALREADY_SENT: 1}}
    assert sender.calls == [[m.key for m in messages]]


def test_a_send_that_raises_leaves_its_batch_in_doubt_and_stops_the_channel(store, tmp_path):
    emails = [due(n) for n in range(6)]
    sms = [due(n, channel="sms") for n in range(100, 103)]
    exploding = ExplodingSender()
    report = deliver(store, {"email": exploding, "sms": outbox(tmp_path, "sms")}, emails + sms, batch_size=2)
    assert exploding.calls == 1  # not called again for the next batches
    assert report.counts == {"email": {IN_DOUBT: 2, NOT_SENT: 4}, "sms": {SENT: 3}}
    assert report.in_doubt == tuple(sorted(m.key for m in emails[:2]))
    assert "email: sending failed, 2 message(s) in doubt: ConnectionResetError: connection reset by peer" in report.errors
    assert store.messages([emails[0].key])[0].error == "ConnectionResetError: connection reset by peer"

    # The next run sends what was never handed over, and still not the doubtful two:
    # this sender cannot look them up.
    flaky = FlakySender()
    rerun = deliver(store, {"email": flaky, "sms": outbox(tmp_path, "sms")}, emails + sms)
    assert sorted(flaky.delivered) == sorted(m.key for m in emails[2:])
    assert rerun.in_doubt == report.in_doubt
    assert rerun.counts["email"] == {IN_DOUBT: 2, SENT: 4}


def test_a_sender_without_a_result_for_a_message_leaves_it_in_doubt(store):
    class Forgetful(FlakySender):
        def send(self, messages):
            return super().send(messages)[:-1]

    messages = [due(1), due(2)]
    report = deliver(store, {"email": Forgetful()}, messages)
    assert report.counts == {"email": {SENT: 1, IN_DOUBT: 1}}
    assert report.in_doubt == (messages[1].key,)


def test_an_in_doubt_result_is_recorded_with_its_reason_and_never_resent(store):
    """A sender that handed a message over and got no answer says "in_doubt":
    the ledger keeps it in doubt with the sender's reason, and later runs leave it alone."""
    class Unanswered(FlakySender):
        def _one(self, message):
            if message.key.startswith("spring/v1/2/"):
                return SendResult(message.key, "in_doubt", error="no answer from the SMSC for part(s) [2] of 2")
            return super()._one(message)

    sender = Unanswered()
    messages = [due(1), due(2)]
    report = deliver(store, {"email": sender}, messages)
    again = deliver(store, {"email": sender}, messages)
    [row] = store.messages([messages[1].key])
    assert report.counts == {"email": {SENT: 1, IN_DOUBT: 1}} and report.in_doubt == (messages[1].key,)
    assert row.status == MessageStatus.IN_DOUBT and row.error == "no answer from the SMSC for part(s) [2] of 2"
    assert again.counts == {"email": {ALREADY_SENT: 1, IN_DOUBT: 1}} and sender.calls == [[m.key for m in messages]]


def test_outcomes_a_sender_heard_back_are_stored_by_deliver(store):
    """A sender that is an OutcomeSource (SMPP receipts on the bind) has what it
    holds stored when delivery ends, each once."""
    from datetime import datetime, timezone

    from campaignctl.contracts import OutcomeSource
    from campaignctl.state import Outcome

    class Receipting(FlakySender):
        def __init__(self):
            super().__init__(permanent={due(3).key})
            self.held: list[Outcome] = []

        def send(self, messages):
            results = super().send(messages)
            now = datetime(2026, 11, 24, 10, 1, tzinfo=timezone.utc)
            self.held += [Outcome(r.key, "delivered", now, {"provider_id": r.provider_id}) for r in results if r.status == "sent"]
            return results

        def drain_outcomes(self):
            held, self.held = self.held, []
            return held

    sender = Receipting()
    messages = [due(n) for n in (1, 2, 3)]
    assert isinstance(sender, OutcomeSource)
    deliver(store, {"email": sender}, messages)
    deliver(store, {"email": sender}, messages)
    assert store.outcome_types([m.key for m in messages]) == {m.key: frozenset({"delivered"}) for m in messages[:2]}
    assert [o.payload for o in store.outcomes(messages[0].key)] == [{"provider_id": f"p-{messages[0].key}"}]


def crash_after_marking_sending(store, messages):
    """What a run killed during the provider call leaves in the ledger."""
    store.reserve_messages([NewMessage(m.key, "spring", m.message.customer_id, m.message.channel, 0, m.cost) for m in messages])
    store.mark_sending([m.key for m in messages])


def test_interrupted_sends_are_settled_by_looking_them_up(store, tmp_path):
    messages = [due(n) for n in range(10)]
    sender = outbox(tmp_path)
    assert isinstance(sender, LookupSender)
    crash_after_marking_sending(store, messages)
    sender.send([m.message for m in messages[:4]])  # the provider got these before the crash
    with (tmp_path / "out/email.jsonl").open("a") as torn:  # and half a line of the fifth
        torn.write('{"campaign": "spring", "key": "' + messages[4].key)

    report = deliver(store, {"email": sender}, messages)
    assert report.counts == {"email": {RECOVERED: 4, SENT: 6}}
    assert report.cost == pytest.approx(5.0) and report.in_doubt == ()
    assert sorted(outbox_keys(tmp_path)) == sorted(m.key for m in messages)  # each once, the torn line gone
    assert store.messages([messages[0].key])[0].provider_id == f"outbox:{messages[0].key}"


def test_a_recovered_message_no_longer_due_is_still_reported(store, tmp_path):
    messages = [due(1), due(2)]
    crash_after_marking_sending(store, messages)
    outbox(tmp_path).send([messages[0].message])
    progress = []
    report = deliver(store, {"email": outbox(tmp_path)}, [], on_progress=lambda *args: progress.append(args))
    assert report.counts == {"email": {RECOVERED: 1}} and report.cost == pytest.approx(0.5)
    assert progress == []  # nothing of this run's own to send
    assert store.message_keys(status="planned") == [messages[1].key]  # safe to send when due again


def test_without_lookup_interrupted_sends_stay_in_doubt_and_are_not_resent(store):
    messages = [due(n) for n in range(3)]
    crash_after_marking_sending(store, messages[:2])
    sender = FlakySender()
    report = deliver(store, {"email": sender}, messages)
    assert sender.delivered == [messages[2].key]
    assert report.in_doubt == tuple(sorted(m.key for m in messages[:2]))
    assert report.counts == {"email": {IN_DOUBT: 2, SENT: 1}}


def test_a_key_the_lookup_does_not_answer_for_stays_in_doubt(store):
    class PartialLookup(FlakySender):
        def lookup(self, keys):
            return {keys[0]: None}  # knows nothing about the others

    messages = [due(n) for n in range(3)]
    crash_after_marking_sending(store, messages)
    sender = PartialLookup()
    report = deliver(store, {"email": sender}, messages)
    first = sorted(m.key for m in messages)[0]
    assert sender.delivered == [first]
    assert len(report.in_doubt) == 2 and first not in report.in_doubt


def test_bad_input_is_refused_before_anything_is_written(store):
    with pytest.raises(ValueError, match="no sender for channel.*sms"):
        deliver(store, {"email": FlakySender()}, [due(1), due(2, channel="sms")])
    with pytest.raises(ValueError, match="given twice"):
        deliver(store, {"email": FlakySender()}, [due(1), due(1)])
    assert store.message_keys() == []
