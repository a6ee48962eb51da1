"""Exactly-once delivery: the ledger protocol between the state store and the
channel senders.

For every message, in this order:

1. reserve its idempotency key in the ledger (``planned``); a key already
   ``sent`` is skipped, never sent again;
2. mark the batch ``sending`` and commit, durably, *before* the provider call;
3. call the provider;
4. record what it answered (``sent``, ``failed_temporary``, ``failed_permanent``,
   or ``in_doubt`` when the sender says the provider may have it: handed over,
   never answered).

A crash between 2 and 4 leaves rows ``sending``. The next run, holding the same
lock, turns them ``in_doubt`` and asks the channel whether it has them
(:class:`LookupSender`): found means sent, not found means safe to send again.
A channel that cannot tell leaves them in doubt, reported by key for a person
to settle; they are never re-sent blindly.

The caller holds the state store's apply lock for the whole call
(``campaignctl.state.locked``): recovery assumes no other process is sending.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

from .contracts import ChannelSender, OutcomeSource, OutgoingMessage, SendResult, address_fingerprint
from .state import SENDABLE, Message, MessageResult, MessageStatus, NewMessage, Outcome, StateStore


@dataclass(frozen=True)
class DueMessage:
    """A rendered message that is due, with what the ledger keeps beside it."""

    message: OutgoingMessage
    step: int  # the cascade step that sends it
    cost: float  # what the channel charges for it

    @property
    def key(self) -> str:
        return self.message.key


@runtime_checkable
class LookupSender(Protocol):
    """A ChannelSender that can say whether the provider already has a message,
    which lets an interrupted delivery be settled instead of left in doubt."""

    def lookup(self, keys: Sequence[str]) -> Mapping[str, str | None]:
        """For every key: the provider's id if the provider has the message, or
        None if it does not and never will (so sending it again cannot
        duplicate it). A key left out of the answer stays in doubt."""


@dataclass(frozen=True)
class Backoff:
    """Waits between retry rounds of temporarily failed messages: exponential,
    capped, with jitter so that workers failing together do not retry together."""

    initial: float = 1.0
    multiplier: float = 2.0
    maximum: float = 60.0

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...): between half
        and all of the exponential delay."""
        ceiling = min(self.maximum, self.initial * self.multiplier ** (retry - 1))
        return ceiling * rng.uniform(0.5, 1.0)


# What a run did with each of its messages, as counted in DeliveryReport.counts.
SENT = "sent"  # delivered by this run
RECOVERED = "recovered"  # in doubt after an earlier crash; the provider had it
ALREADY_SENT = "already_sent"  # sent by an earlier run; skipped
FAILED_TEMPORARY = "failed_temporary"  # still failing after max_attempts; a later run retries
FAILED_PERMANENT = "failed_permanent"  # refused by the provider, now or earlier; never retried
IN_DOUBT = "in_doubt"  # the provider may or may not have it; see DeliveryReport.in_doubt
NOT_SENT = "not_sent"  # its channel failed as a whole this run; still planned

_SKIPPED_AS = {
    MessageStatus.SENT: ALREADY_SENT,
    MessageStatus.FAILED_PERMANENT: FAILED_PERMANENT,
    MessageStatus.IN_DOUBT: IN_DOUBT,
}


@dataclass(frozen=True)
class DeliveryReport:
    counts: Mapping[str, Mapping[str, int]]  # channel -> outcome (SENT, ALREADY_SENT, ...) -> messages
    cost: float  # of the messages sent or recovered by this run
    in_doubt: tuple[str, ...]  # every key in doubt in the ledger, for a person to settle
    errors: tuple[str, ...]  # channels that failed as a whole, with the reason
    elapsed: float  # seconds

    def total(self, outcome: str) -> int:
        return sum(by_outcome.get(outcome, 0) for by_outcome in self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for the run's summary in the state store."""
        return {
            "counts": {channel: dict(by_outcome) for channel, by_outcome in self.counts.items()},
            "cost": self.cost,
            "in_doubt": list(self.in_doubt),
            "errors": list(self.errors),
            "elapsed": self.elapsed,
        }


@dataclass
class _Tally:
    counts: defaultdict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    cost: float = 0.0
    errors: list[str] = field(default_factory=list)
    settled: int = 0
    retry_after: float = 0.0  # the longest Retry-After a provider asked for in this round

    def add(self, channel: str, outcome: str, messages: int = 1, cost: float = 0.0, *, of_this_run: bool = True) -> None:
        """Count messages; ``of_this_run=False`` for rows settled that were not
        among the messages given, which progress (settled of total) leaves out."""
        self.counts[channel][outcome] += messages
        self.cost += cost
        if of_this_run:
            self.settled += messages


def deliver(
    store: StateStore,
    senders: Mapping[str, ChannelSender],
    messages: Sequence[DueMessage],
    *,
    batch_size: int = 500,
    max_attempts: int = 5,
    backoff: Backoff = Backoff(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> DeliveryReport:
    """Send each due message exactly once across runs, crashes included; the
    caller holds the store's apply lock.

    ``senders`` maps a channel name to its sender (every message's channel must
    have one); ``on_progress(settled, total)`` is called after each batch.
    Messages failing temporarily are retried in rounds, ``backoff`` apart, up to
    ``max_attempts`` calls in this run; then they stay ``failed_temporary`` for
    a later run. ``sleep``, ``clock`` and ``rng`` are there for tests.
    """
    if batch_size < 1 or max_attempts < 1:
        raise ValueError("batch_size and max_attempts must be at least 1")
    started = clock()
    _check(messages, senders)
    tally = _Tally()
    recovered = _recover_in_doubt(store, senders)
    due = _reserve(store, messages, recovered, tally)
    progress = (lambda: on_progress(tally.settled, len(messages))) if on_progress else (lambda: None)
    broken: set[str] = set()
    rng = rng or random.Random()
    for attempt in range(1, max_attempts + 1):
        if not due:
            break
        if attempt > 1:  # a provider's Retry-After is honoured, up to the backoff's maximum
            sleep(min(backoff.maximum, max(backoff.delay(attempt - 1, rng), tally.retry_after)))
            tally.retry_after = 0.0
        due = _send_round(store, senders, due, batch_size, broken, tally, progress, last=attempt == max_attempts)
    _record_drained_outcomes(store, senders)
    in_doubt = tuple(sorted(m.key for m in store.in_doubt()))
    return DeliveryReport(
        {channel: dict(by_outcome) for channel, by_outcome in tally.counts.items()},
        round(tally.cost, 6), in_doubt, tuple(tally.errors), clock() - started,
    )


def _check(messages: Sequence[DueMessage], senders: Mapping[str, ChannelSender]) -> None:
    """Refuse, before anything is written, input that could only be a caller's bug."""
    missing = sorted({m.message.channel for m in messages} - set(senders))
    if missing:
        raise ValueError(f"no sender for channel(s) {', '.join(missing)}")
    repeated = [key for key, n in Counter(m.key for m in messages).items() if n > 1]
    if repeated:
        raise ValueError(f"{len(repeated)} idempotency key(s) given twice, e.g. {repeated[0]!r}")


def _recover_in_doubt(store: StateStore, senders: Mapping[str, ChannelSender]) -> dict[str, Message]:
    """Settle what earlier runs left unfinished, by asking the channels that can
    tell; return the rows found at the provider (now ``sent``), by key."""
    store.mark_interrupted()
    by_channel: defaultdict[str, list[Message]] = defaultdict(list)
    for row in store.in_doubt():
        by_channel[row.channel].append(row)
    recovered: dict[str, Message] = {}
    for channel, rows in by_channel.items():
        sender = senders.get(channel)
        if not isinstance(sender, LookupSender):
            continue
        answer = sender.lookup([row.key for row in rows])
        settled = {row.key: answer[row.key] for row in rows if row.key in answer}
        store.resolve_in_doubt(settled)
        recovered.update((row.key, row) for row in rows if settled.get(row.key) is not None)
    return recovered


def _reserve(store: StateStore, messages: Sequence[DueMessage], recovered: Mapping[str, Message], tally: _Tally) -> list[DueMessage]:
    """Reserve every key, count what needs no sending, and return the messages
    that may be sent now."""
    ledger = store.reserve_messages(
        [NewMessage(m.key, m.message.campaign, m.message.customer_id, m.message.channel, m.step, m.cost) for m in messages]
    )
    due = []
    for m in messages:
        status = ledger[m.key].status
        if status in SENDABLE:
            due.append(m)
        elif m.key in recovered:
            tally.add(m.message.channel, RECOVERED, cost=m.cost)
        else:
            tally.add(m.message.channel, _SKIPPED_AS.get(status, IN_DOUBT))
    given = {m.key for m in messages}
    for key, row in recovered.items():  # due in the crashed run, no longer given: still this run's doing
        if key not in given:
            tally.add(row.channel, RECOVERED, cost=row.cost, of_this_run=False)
    return due


def _send_round(
    store: StateStore,
    senders: Mapping[str, ChannelSender],
    due: list[DueMessage],
    batch_size: int,
    broken: set[str],
    tally: _Tally,
    progress: Callable[[], None],
    *,
    last: bool,
) -> list[DueMessage]:
    """One pass over ``due``; returns the temporarily failed, to retry (none on
    the ``last`` round: they are counted as failed and left to a later run)."""
    retry: list[DueMessage] = []
    for channel, batch in _batches(due, batch_size):
        if channel in broken:
            tally.add(channel, NOT_SENT, len(batch))
            continue
        # Under the apply lock every key is claimed; a key another worker took
        # between reserve and now is that worker's to send and to count.
        claimed = set(store.mark_sending([m.key for m in batch]))
        batch = [m for m in batch if m.key in claimed]
        if batch:
            failed = _send_batch(store, senders[channel], channel, batch, broken, tally)
            if last:
                tally.add(channel, FAILED_TEMPORARY, len(failed))
            else:
                retry.extend(failed)
        progress()
    return retry


def _batches(due: list[DueMessage], batch_size: int) -> Iterator[tuple[str, list[DueMessage]]]:
    """Batches of one channel each, in the order messages were given within a channel."""
    by_channel: defaultdict[str, list[DueMessage]] = defaultdict(list)
    for m in due:
        by_channel[m.message.channel].append(m)
    for channel, items in by_channel.items():
        for start in range(0, len(items), batch_size):
            yield channel, items[start:start + batch_size]


def _send_batch(
    store: StateStore, sender: ChannelSender, channel: str, batch: list[DueMessage], broken: set[str], tally: _Tally
) -> list[DueMessage]:
    """Call the provider for rows already ``sending``, record the answers, and
    return the temporarily failed."""
    try:
        results = sender.send([m.message for m in batch])
    except Exception as exc:  # noqa: BLE001 - any failure of the call leaves its outcome unknown
        # The provider may have taken some of the batch before failing: in doubt,
        # and the channel is not called again this run, so doubt does not pile up.
        broken.add(channel)
        tally.errors.append(f"{channel}: sending failed, {len(batch)} message(s) in doubt: {type(exc).__name__}: {exc}")
        store.finish_messages([MessageResult(m.key, MessageStatus.IN_DOUBT, error=f"{type(exc).__name__}: {exc}") for m in batch])
        tally.add(channel, IN_DOUBT, len(batch))
        return []
    answers = _answers(batch, results)
    store.finish_messages(answers)
    _note_provider_hints(store, answers, results, tally, {m.key: m.message.to for m in batch})
    failed = []
    for m, answer in zip(batch, answers):
        if answer.status == MessageStatus.FAILED_TEMPORARY:
            failed.append(m)
        elif answer.status == MessageStatus.SENT:
            tally.add(channel, SENT, cost=m.cost)
        else:
            tally.add(channel, str(answer.status))
    return failed


def _note_provider_hints(store: StateStore, answers: list[MessageResult], results: Sequence[SendResult], tally: _Tally,
                         addresses: Mapping[str, str | None]) -> None:
    """Keep what a provider said beyond the status: how long to wait before
    retrying, and that an address is gone (a "bounced" outcome with the
    address's fingerprint, so that address is held back like an unsubscribe
    until the customer has another one)."""
    by_key = {result.key: result for result in results}
    gone = []
    for answer in answers:
        result = by_key.get(answer.key)
        if result is None:
            continue
        if answer.status == MessageStatus.FAILED_TEMPORARY and result.retry_after:
            tally.retry_after = max(tally.retry_after, float(result.retry_after))
        elif answer.status == MessageStatus.FAILED_PERMANENT and result.address_invalid:
            payload = {"address_invalid": True, "address": address_fingerprint(addresses.get(answer.key)), "error": result.error}
            gone.append(Outcome(answer.key, "bounced", datetime.now(timezone.utc), payload))
    if gone:
        store.record_outcomes(gone)


def _record_drained_outcomes(store: StateStore, senders: Mapping[str, ChannelSender]) -> None:
    """Store what senders heard back on their own connections (SMPP delivery
    receipts, campaignctl.contracts.OutcomeSource) before the caller closes them."""
    for sender in senders.values():
        if isinstance(sender, OutcomeSource):
            outcomes = sender.drain_outcomes()
            if outcomes:
                store.record_outcomes(outcomes)


_LEDGER_STATUS = {
    "sent": MessageStatus.SENT,
    "temporary_failure": MessageStatus.FAILED_TEMPORARY,
    "permanent_failure": MessageStatus.FAILED_PERMANENT,
    "in_doubt": MessageStatus.IN_DOUBT,  # handed over, no answer: never re-sent blindly
}


def _answers(batch: list[DueMessage], results: Sequence[SendResult]) -> list[MessageResult]:
    """The ledger result for each message of the batch, in batch order. A message
    the sender gave no (or a malformed) result for is in doubt: it was handed over."""
    by_key = {result.key: result for result in results}
    answers = []
    for m in batch:
        result = by_key.get(m.key)
        status = _LEDGER_STATUS.get(result.status) if result else None
        if status is None:
            answers.append(MessageResult(m.key, MessageStatus.IN_DOUBT, error=f"the sender returned no valid result ({result!r})"))
        else:
            answers.append(MessageResult(m.key, status, result.provider_id, result.error))
    return answers


# --------------------------------------------------------------------------- settling by hand


@dataclass(frozen=True)
class Settlement:
    """What `campaignctl settle` did: keys marked sent, keys released to be
    sent again, and keys that were not in doubt (left as they are)."""

    sent: tuple[str, ...]
    released: tuple[str, ...]
    not_in_doubt: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"sent": list(self.sent), "released": list(self.released), "not_in_doubt": list(self.not_in_doubt)}


def settle_in_doubt(store: StateStore, keys: Sequence[str], *, provider_has_it: bool, provider_id: str | None = None) -> Settlement:
    """A person's answer for messages in doubt, after checking the provider:
    it has them (``sent``, never sent again) or it does not (back to
    ``planned``: the next apply sends them once). Only rows in doubt change.
    The caller holds the apply lock, so no apply is settling them at the same time."""
    doubtful = {m.key for m in store.in_doubt()}
    chosen = [key for key in dict.fromkeys(keys) if key in doubtful]
    if chosen:
        answer = (provider_id or "settled-by-hand") if provider_has_it else None
        store.resolve_in_doubt({key: answer for key in chosen})
    others = tuple(key for key in dict.fromkeys(keys) if key not in doubtful)
    return Settlement(tuple(chosen) if provider_has_it else (), () if provider_has_it else tuple(chosen), others)
