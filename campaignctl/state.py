"""What apply remembers, and the contract every state store keeps.

A state store is a plugin (``register_state_stores``): SQLite is the default,
PostgreSQL serves several workers. Both satisfy :class:`StateStore` and apply
the same versioned migrations (:data:`MIGRATIONS`), written once here with
type placeholders each store fills with its own column types.

The message ledger is what makes delivery exactly-once (campaignctl.delivery):
a row is reserved under its idempotency key, marked ``sending`` and committed
before the provider is called, and finished after. A row found ``sending`` by
the next run was interrupted mid-call: it becomes ``in_doubt`` and is never
re-sent blindly.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class StateError(RuntimeError):
    """The state store is unusable: newer schema, corrupt file, unreachable server."""


class LockTimeout(StateError):
    """Another process holds the apply lock and did not release it in time."""

    def __init__(self, holder: LockHolder | None, timeout: float, store: str):
        self.holder = holder
        who = holder.describe() if holder else "another process (holder unknown)"
        super().__init__(
            f"the state lock on {store} is held by {who}; waited {timeout:g}s. "
            "If that process is gone, run `campaignctl force-unlock`."
        )


# --------------------------------------------------------------------------- statuses


class MessageStatus(StrEnum):
    PLANNED = "planned"  # reserved in the ledger, provider not called yet
    SENDING = "sending"  # committed before the provider call; still so after a crash
    SENT = "sent"
    FAILED_TEMPORARY = "failed_temporary"  # not delivered; may be retried
    FAILED_PERMANENT = "failed_permanent"  # not delivered; never retried
    IN_DOUBT = "in_doubt"  # a call was interrupted: the provider may or may not have it


# A reserved row in one of these states has not reached the provider, so it may be sent.
SENDABLE = frozenset({MessageStatus.PLANNED, MessageStatus.FAILED_TEMPORARY})

ENROLLMENT_STATUSES = frozenset({"active", "exited", "completed"})
OUTCOME_TYPES = frozenset({"delivered", "opened", "clicked", "converted", "unsubscribed", "bounced"})


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Run:
    id: int
    started_at: datetime
    finished_at: datetime | None
    status: str  # "running" | "succeeded" | "failed" | ...
    summary: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CampaignVersion:
    campaign: str
    version: str  # hash of the campaign's definition
    definition: Mapping[str, Any]
    first_seen: datetime


@dataclass(frozen=True)
class Enrollment:
    campaign: str
    customer_id: str
    version: str
    group: str  # "treatment" | "control" | "holdout"
    arm: str | None
    step: int
    status: str  # one of ENROLLMENT_STATUSES
    exit_reason: str | None
    entered_at: datetime
    next_step_at: datetime | None
    last_message_key: str | None = None  # the message the next step's condition looks at
    entries: int = 1  # times this customer entered the campaign, this one included


@dataclass(frozen=True)
class NewMessage:
    """A message to reserve in the ledger (the part the caller knows up front)."""

    key: str  # campaign/version/customer/step/window
    campaign: str
    customer_id: str
    channel: str
    step: int
    cost: float
    # What apply needs to render the message again if a run dies after reserving
    # it (template, offer, arm): small, never the rendered content.
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LedgerEntry:
    """Where a reserved message stands."""

    status: MessageStatus
    attempts: int


@dataclass(frozen=True)
class Message:
    """A row of the message ledger."""

    key: str
    campaign: str
    customer_id: str
    channel: str
    step: int
    status: MessageStatus
    attempts: int
    provider_id: str | None
    cost: float
    created_at: datetime
    updated_at: datetime
    error: str | None
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MessageResult:
    """How one provider call for one message ended, to record in the ledger."""

    key: str
    status: MessageStatus  # SENT, FAILED_TEMPORARY, FAILED_PERMANENT or IN_DOUBT
    provider_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Outcome:
    message_key: str
    type: str  # one of OUTCOME_TYPES
    at: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IssuedOffer:
    key: str  # idempotency key, like a message's
    campaign: str
    customer_id: str
    offer: str
    code: str | None
    issued_at: datetime
    status: str  # "issued" | "redeemed" | "expired" | ...
    pool: str | None = None  # the promo pool the code came from
    expires_at: datetime | None = None  # the first moment the code is no longer valid
    terms: Mapping[str, Any] = field(default_factory=dict)  # what a sink exports beside the code (campaignctl.issuing)


@dataclass(frozen=True)
class LockHolder:
    owner: str
    pid: int
    host: str
    acquired_at: datetime

    def describe(self) -> str:
        return f"{self.owner!r} (pid {self.pid} on {self.host}, since {self.acquired_at:%Y-%m-%d %H:%M:%S} UTC)"


# --------------------------------------------------------------------------- the contract


@runtime_checkable
class StateStore(Protocol):
    """Everything apply and report read and write. Batch methods take and
    return whole batches: a store does one round trip (and one transaction)
    per call, never one per row. Every write method commits before it returns."""

    def schema_versions(self) -> list[int]:
        """The migrations applied to this store, in order."""

    # -- runs
    def begin_run(self, summary: Mapping[str, Any] | None = None) -> int:
        """Record a run as ``running`` and return its id."""

    def finish_run(self, run_id: int, status: str, summary: Mapping[str, Any]) -> None:
        """Stamp the run's end, final status and summary."""

    def runs(self, limit: int = 20) -> list[Run]:
        """The latest runs, newest first."""

    # -- campaign versions and enrollments
    def record_campaign_versions(self, versions: Sequence[CampaignVersion]) -> list[str]:
        """Remember definitions by (campaign, version); return "campaign/version"
        of those not seen before. first_seen of a known version never changes."""

    def campaign_versions(self, campaign: str) -> list[CampaignVersion]:
        """Every version of a campaign, oldest first."""

    def upsert_enrollments(self, enrollments: Sequence[Enrollment]) -> None:
        """Insert or replace enrollments by (campaign, customer_id)."""

    def enrollments(self, campaign: str | None = None, status: str | None = None) -> list[Enrollment]:
        """Enrollments of one campaign (every campaign when None), optionally of one status."""

    def atomically(self) -> contextlib.AbstractContextManager[None]:
        """A context in which the writes made are committed together or not at all."""

    def set_current_versions(self, versions: Mapping[str, str]) -> None:
        """Replace the record of applied campaigns: campaign -> version. A campaign
        left out is gone from the project."""

    def current_versions(self) -> dict[str, str]:
        """campaign -> version, as last set by apply."""

    def reserve_messages(self, messages: Sequence[NewMessage]) -> dict[str, LedgerEntry]:
        """Insert each message as ``planned`` unless its key is already in the
        ledger (then it is left untouched: a key is reserved once, ever), and
        return where every given key now stands."""

    def mark_sending(self, keys: Sequence[str]) -> list[str]:
        """Move those keys that are sendable (SENDABLE) to ``sending``, count an
        attempt, commit durably, and return the keys moved. Only a returned key
        may be handed to a provider."""

    def finish_messages(self, results: Sequence[MessageResult]) -> None:
        """Record the outcome of provider calls for rows in ``sending``."""

    def mark_interrupted(self) -> list[str]:
        """Turn every row still ``sending`` into ``in_doubt`` and return their keys.
        Call it holding the lock, before sending: a ``sending`` row then belongs
        to a run that died between the provider call and its bookkeeping."""

    def in_doubt(self) -> list[Message]:
        """Ledger rows in doubt, oldest first."""

    def resolve_in_doubt(self, found: Mapping[str, str | None]) -> None:
        """Settle in-doubt rows: a provider id means the provider has the message
        (now ``sent``); None means it never got it (back to ``planned``, so it
        will be sent again)."""

    def messages(self, keys: Sequence[str]) -> list[Message]:
        """The ledger rows for ``keys`` (unknown keys are left out)."""

    def message_keys(self, status: str | None = None) -> list[str]:
        """Every key in the ledger, or those with ``status``, sorted."""

    # -- outcomes and offers
    def record_outcomes(self, outcomes: Sequence[Outcome]) -> int:
        """Store outcomes; one already stored (same key, type and time) is
        ignored, so a provider's webhook may be replayed. Returns how many were new."""

    def outcomes(self, message_key: str) -> list[Outcome]:
        """A message's outcomes in time order."""

    def sent_since(self, since: datetime) -> list[Message]:
        """Messages sent at or after ``since`` (frequency caps look back this far)."""

    def outcome_types(self, keys: Sequence[str]) -> dict[str, frozenset[str]]:
        """message key -> the outcome types recorded for it, for the given keys."""

    def unsubscribed(self) -> list[tuple[str, str]]:
        """(customer_id, channel) of every unsubscribe outcome."""

    def invalid_addresses(self) -> list[tuple[str, str, str | None]]:
        """(customer_id, channel, address fingerprint) of every message bounced
        because its address is gone: a "bounced" outcome whose payload has
        ``address_invalid: true`` (campaignctl.delivery records it from
        SendResult.address_invalid, with ``address``: contracts.address_fingerprint
        of the address; None for outcomes recorded without one)."""

    def spend(self, since: datetime | None = None) -> dict[str, float]:
        """campaign -> cost of its sent messages (updated at or after ``since``)."""

    def issue_offers(self, offers: Sequence[IssuedOffer]) -> list[str]:
        """Record issued offers by key, once; return the keys newly issued."""

    def issued_offers(self, campaign: str) -> list[IssuedOffer]:
        """A campaign's issued offers in issue order."""

    def issued_offers_by_key(self, keys: Sequence[str]) -> list[IssuedOffer]:
        """The issued offers with these keys (unknown keys are left out)."""

    # -- promo codes and offer exports (campaignctl.issuing)
    def hold_promo_codes(self, pool: str, wanted: Mapping[str, str]) -> dict[str, str]:
        """Give each holder (a key) the code proposed for it, unless the code is
        already held in ``pool`` or the holder already holds one; return, for
        every given holder that holds a code now, its code (the earlier one for
        a holder that had one). A code is held once per pool, ever."""

    def promo_codes(self, pool: str) -> dict[str, str]:
        """holder -> code of every code ``pool`` handed out."""

    def unexported_offers(self, sink: str, after: str | None, limit: int) -> list[IssuedOffer]:
        """Up to ``limit`` issued offers ``sink`` has not taken yet, in key order,
        with keys after ``after`` (None: from the first): page by passing the last key."""

    def mark_offers_exported(self, sink: str, keys: Sequence[str]) -> None:
        """Record that ``sink`` took these issued offers."""

    # -- the apply lock
    def acquire_lock(self, owner: str, timeout: float) -> None:
        """Take the one apply lock, waiting up to ``timeout`` seconds (0: do not
        wait); raise LockTimeout naming the holder when it stays taken."""

    def release_lock(self) -> None:
        """Give back the lock this store took (nothing if it holds none)."""

    def lock_holder(self) -> LockHolder | None:
        """Who holds the lock now, if anyone."""

    def force_unlock(self) -> LockHolder | None:
        """Break the lock whoever holds it and return who held it. For an
        operator, after making sure the holder is really gone."""

    def close(self) -> None:
        """Release the lock if held, and the connection."""


@contextlib.contextmanager
def locked(store: StateStore, owner: str, timeout: float) -> Iterator[StateStore]:
    """``with locked(store, "apply", 30):`` holds the apply lock for the block."""
    store.acquire_lock(owner, timeout)
    try:
        yield store
    finally:
        store.release_lock()


# --------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    """One schema change. ``statements`` use placeholders a store fills with its
    types: {id} an auto-numbered primary key, {ts} a UTC timestamp, {json} a
    JSON document, {money} an amount."""

    version: int
    name: str
    statements: tuple[str, ...]


# Append only: a released migration never changes; a new need is a new version.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial state", (
        """CREATE TABLE runs (
            id {id},
            started_at {ts} NOT NULL,
            finished_at {ts},
            status TEXT NOT NULL,
            summary {json} NOT NULL)""",
        """CREATE TABLE campaign_versions (
            campaign TEXT NOT NULL,
            version TEXT NOT NULL,
            definition {json} NOT NULL,
            first_seen {ts} NOT NULL,
            PRIMARY KEY (campaign, version))""",
        """CREATE TABLE enrollments (
            campaign TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            version TEXT NOT NULL,
            grp TEXT NOT NULL CHECK (grp IN ('control', 'treatment', 'holdout')),
            arm TEXT,
            step INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'exited', 'completed')),
            exit_reason TEXT,
            entered_at {ts} NOT NULL,
            next_step_at {ts},
            last_message_key TEXT,
            entries INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (campaign, customer_id))""",
        # The campaigns of the last applied project and their versions: what plan
        # compares the project with (a campaign missing from it was removed).
        """CREATE TABLE current_versions (
            campaign TEXT PRIMARY KEY,
            version TEXT NOT NULL,
            applied_at {ts} NOT NULL)""",
        "CREATE INDEX enrollments_due ON enrollments (status, next_step_at)",
        """CREATE TABLE messages (
            key TEXT PRIMARY KEY,
            campaign TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            step INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN
                ('planned', 'sending', 'sent', 'failed_temporary', 'failed_permanent', 'in_doubt')),
            attempts INTEGER NOT NULL DEFAULT 0,
            provider_id TEXT,
            cost {money} NOT NULL,
            created_at {ts} NOT NULL,
            updated_at {ts} NOT NULL,
            error TEXT,
            payload {json} NOT NULL)""",
        # Recovery and reports look rows up by status; frequency caps by customer.
        "CREATE INDEX messages_status ON messages (status)",
        "CREATE INDEX messages_customer ON messages (customer_id, channel, created_at)",
        """CREATE TABLE outcomes (
            message_key TEXT NOT NULL REFERENCES messages (key),
            type TEXT NOT NULL CHECK (type IN
                ('delivered', 'opened', 'clicked', 'converted', 'unsubscribed', 'bounced')),
            at {ts} NOT NULL,
            payload {json} NOT NULL,
            PRIMARY KEY (message_key, type, at))""",
        """CREATE TABLE issued_offers (
            key TEXT PRIMARY KEY,
            campaign TEXT NOT NULL,
            customer_id TEXT NOT NULL,
            offer TEXT NOT NULL,
            code TEXT,
            issued_at {ts} NOT NULL,
            status TEXT NOT NULL)""",
        "CREATE INDEX issued_offers_campaign ON issued_offers (campaign, issued_at)",
        """CREATE TABLE state_lock (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            acquired_at {ts} NOT NULL)""",
    )),
    Migration(2, "promo codes and offer exports", (
        # Every code a pool handed out, and to whom: the primary key makes a code
        # held once per pool; the unique holder index, one code per holder.
        """CREATE TABLE promo_codes (
            pool TEXT NOT NULL,
            code TEXT NOT NULL,
            holder TEXT NOT NULL,
            held_at {ts} NOT NULL,
            PRIMARY KEY (pool, code))""",
        "CREATE UNIQUE INDEX promo_codes_holder ON promo_codes (pool, holder)",
        "ALTER TABLE issued_offers ADD COLUMN pool TEXT",
        "ALTER TABLE issued_offers ADD COLUMN expires_at {ts}",
        "ALTER TABLE issued_offers ADD COLUMN terms {json} NOT NULL DEFAULT '{{}}'",
        # What each offer sink took: a rerun exports only what is missing here.
        """CREATE TABLE offer_exports (
            sink TEXT NOT NULL,
            key TEXT NOT NULL REFERENCES issued_offers (key),
            exported_at {ts} NOT NULL,
            PRIMARY KEY (sink, key))""",
    )),
)

LATEST_VERSION = MIGRATIONS[-1].version

# The one lock apply takes: a single row (SQLite) or advisory lock (PostgreSQL).
LOCK_NAME = "apply"


def pending_migrations(current: int) -> tuple[Migration, ...]:
    """Migrations after schema version ``current``, in order; refuses a state
    written by a newer campaignctl rather than guess at its meaning."""
    if current > LATEST_VERSION:
        raise StateError(
            f"the state store is at schema version {current}, newer than this campaignctl knows "
            f"({LATEST_VERSION}); upgrade campaignctl"
        )
    return tuple(m for m in MIGRATIONS if m.version > current)


# --------------------------------------------------------------------------- helpers for stores


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def this_process() -> tuple[int, str]:
    """(pid, host) recorded with a lock, so its holder can be named and found."""
    return os.getpid(), socket.gethostname()


def process_is_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (signal 0 checks, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
