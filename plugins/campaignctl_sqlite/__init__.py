"""Built-in state store ``sqlite``: the default, one file in the project.

Project options:
  path: the database file (default ``.campaignctl/state.db``, relative to the project)

One writer at a time is all apply needs (it runs under the apply lock), and
SQLite in WAL mode gives that with readers never blocked: ``plan`` and
``report`` may read while ``apply`` writes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from campaignctl.contracts import unknown_options
from campaignctl.hookspecs import hookimpl
from campaignctl.state import (
    LOCK_NAME,
    SENDABLE,
    CampaignVersion,
    Enrollment,
    IssuedOffer,
    LedgerEntry,
    LockHolder,
    LockTimeout,
    Message,
    MessageResult,
    MessageStatus,
    NewMessage,
    Outcome,
    Run,
    StateError,
    pending_migrations,
    process_is_alive,
    this_process,
    utc_now,
)

__version__ = "0.1.0"

log = logging.getLogger(__name__)

DEFAULT_PATH = ".campaignctl/state.db"
# ISO-8601 UTC text sorts as time does; INTEGER PRIMARY KEY is SQLite's auto-numbered rowid.
COLUMN_TYPES = {"id": "INTEGER PRIMARY KEY", "ts": "TEXT", "json": "TEXT", "money": "REAL"}
BUSY_TIMEOUT_SECONDS = 30.0  # a writer waits this long for another's transaction to end
LOCK_POLL_SECONDS = 0.1

_STATUSES = {str(status): status for status in MessageStatus}  # a dict lookup: MessageStatus(text) is slow in bulk
_SENDABLE_SQL = ", ".join(f"'{status}'" for status in sorted(SENDABLE))
_MESSAGE_COLUMNS = "key, campaign, customer_id, channel, step, status, attempts, provider_id, cost, created_at, updated_at, error, payload"
_OFFER_COLUMNS = "key, campaign, customer_id, offer, code, issued_at, status, pool, expires_at, terms"


class SqliteStateStore:
    """The StateStore contract (campaignctl.state) over one SQLite file."""

    def __init__(self, path: str | Path, *, clock: Callable[[], datetime] = utc_now):
        self.path = Path(path)
        self._clock = clock
        self._holds_lock = False
        self._in_transaction = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: no implicit transactions; every write below
            # opens its own, so what is committed when is visible in the code.
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)
            self._configure()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"cannot open the state database {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SqliteStateStore({str(self.path)!r})"

    def _configure(self) -> None:
        self._enable_wal()
        # In WAL mode synchronous=NORMAL fsyncs only at checkpoints: a commit is
        # in the WAL file, in the OS page cache, when it returns, so it survives
        # the process being killed (SIGKILL, OOM), just not a power cut or kernel
        # crash. The one write whose loss could cause a duplicate send, marking
        # rows ``sending`` before the provider call, is made fully durable on its
        # own (see mark_sending); everything else may be redone after a power cut.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")

    def _enable_wal(self) -> None:
        # Switching a new database to WAL needs it to itself, and SQLite does not
        # wait for that (no busy handler here): two applies starting on a fresh
        # state file would have one fail. Retry until the busy timeout instead.
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. IMMEDIATE takes the write lock at BEGIN, so two
        writers queue (busy timeout) instead of one failing at its first write.
        Inside ``atomically()`` it joins the transaction already open."""
        if self._in_transaction:
            yield self._db
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._in_transaction = False

    @contextmanager
    def atomically(self) -> Iterator[None]:
        with self._write():
            yield

    def _now(self) -> str:
        return self._clock().isoformat()

    # ------------------------------------------------------------------ migrations

    def _migrate(self) -> None:
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            (current,) = db.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            for migration in pending_migrations(current):
                for statement in migration.statements:
                    db.execute(statement.format(**COLUMN_TYPES))
                db.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (migration.version, migration.name, self._now()))

    def schema_versions(self) -> list[int]:
        """Applied migration versions, in order (for tests and `campaignctl state`)."""
        return [row[0] for row in self._db.execute("SELECT version FROM schema_version ORDER BY version")]

    # ------------------------------------------------------------------ runs

    def begin_run(self, summary: Mapping[str, Any] | None = None) -> int:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO runs (started_at, status, summary) VALUES (?, 'running', ?)", (self._now(), json.dumps(summary or {}))
            )
            return cursor.lastrowid

    def finish_run(self, run_id: int, status: str, summary: Mapping[str, Any]) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET finished_at = ?, status = ?, summary = ? WHERE id = ?", (self._now(), status, json.dumps(summary), run_id))

    def runs(self, limit: int = 20) -> list[Run]:
        rows = self._db.execute("SELECT id, started_at, finished_at, status, summary FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        return [Run(id, _time(started), _time(finished), status, json.loads(summary)) for id, started, finished, status, summary in rows]

    # ------------------------------------------------------------------ campaign versions and enrollments

    def record_campaign_versions(self, versions: Sequence[CampaignVersion]) -> list[str]:
        new = []
        with self._write() as db:
            for v in versions:
                cursor = db.execute(
                    "INSERT INTO campaign_versions VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (v.campaign, v.version, json.dumps(v.definition, sort_keys=True), v.first_seen.isoformat()),
                )
                if cursor.rowcount:
                    new.append(f"{v.campaign}/{v.version}")
        return new

    def campaign_versions(self, campaign: str) -> list[CampaignVersion]:
        rows = self._db.execute(
            "SELECT campaign, version, definition, first_seen FROM campaign_versions WHERE campaign = ? ORDER BY first_seen, version", (campaign,)
        )
        return [CampaignVersion(c, v, json.loads(d), _time(first)) for c, v, d, first in rows]

    def upsert_enrollments(self, enrollments: Sequence[Enrollment]) -> None:
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO enrollments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (e.campaign, e.customer_id, e.version, e.group, e.arm, e.step, e.status, e.exit_reason,
                     e.entered_at.isoformat(), _iso(e.next_step_at), e.last_message_key, e.entries)
                    for e in enrollments
                ],
            )

    def enrollments(self, campaign: str | None = None, status: str | None = None) -> list[Enrollment]:
        rows = self._db.execute(
            "SELECT * FROM enrollments WHERE (?1 IS NULL OR campaign = ?1) AND (?2 IS NULL OR status = ?2) ORDER BY campaign, customer_id",
            (campaign, status),
        )
        return [
            Enrollment(c, customer, version, group, arm, step, st, reason, _time(entered), _time(next_at), last_key, entries)
            for c, customer, version, group, arm, step, st, reason, entered, next_at, last_key, entries in rows
        ]

    def set_current_versions(self, versions: Mapping[str, str]) -> None:
        now = self._now()
        with self._write() as db:
            db.execute("DELETE FROM current_versions")
            db.executemany("INSERT INTO current_versions VALUES (?, ?, ?)", [(c, v, now) for c, v in sorted(versions.items())])

    def current_versions(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT campaign, version FROM current_versions ORDER BY campaign"))

    # ------------------------------------------------------------------ the message ledger

    def reserve_messages(self, messages: Sequence[NewMessage]) -> dict[str, LedgerEntry]:
        now = self._now()
        with self._write() as db:
            db.executemany(
                f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, 'planned', 0, NULL, ?, ?, ?, NULL, ?) ON CONFLICT DO NOTHING",
                [(m.key, m.campaign, m.customer_id, m.channel, m.step, m.cost, now, now, json.dumps(m.payload)) for m in messages],
            )
            rows = db.execute(
                "SELECT key, status, attempts FROM messages WHERE key IN (SELECT value FROM json_each(?))",
                (json.dumps([m.key for m in messages]),),
            )
            return {key: LedgerEntry(_STATUSES[status], attempts) for key, status, attempts in rows}

    def mark_sending(self, keys: Sequence[str]) -> list[str]:
        # The durable write of exactly-once: once this returns, a crash at any
        # later point leaves these rows ``sending``, to be found by the next run.
        # So this commit is synced to disk (FULL) even though others are not.
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self._write() as db:
                # "+status": keeps the planner off the status index, which would
                # scan every planned row of the ledger for each batch.
                rows = db.execute(
                    f"UPDATE messages SET status = 'sending', attempts = attempts + 1, updated_at = ?"
                    f" WHERE key IN (SELECT value FROM json_each(?)) AND +status IN ({_SENDABLE_SQL}) RETURNING key",
                    (self._now(), json.dumps(list(keys))),
                ).fetchall()
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        return [key for (key,) in rows]

    def finish_messages(self, results: Sequence[MessageResult]) -> None:
        now = self._now()
        with self._write() as db:
            # Only rows still ``sending``: a result never overwrites a row another
            # path already settled.
            db.executemany(
                "UPDATE messages SET status = ?, provider_id = coalesce(?, provider_id), error = ?, updated_at = ?"
                " WHERE key = ? AND status = 'sending'",
                [(str(r.status), r.provider_id, r.error, now, r.key) for r in results],
            )

    def mark_interrupted(self) -> list[str]:
        with self._write() as db:
            rows = db.execute(
                "UPDATE messages SET status = 'in_doubt', updated_at = ?,"
                " error = 'interrupted during the provider call' WHERE status = 'sending' RETURNING key",
                (self._now(),),
            ).fetchall()
        return sorted(key for (key,) in rows)

    def in_doubt(self) -> list[Message]:
        rows = self._db.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE status = 'in_doubt' ORDER BY updated_at, key")
        return [_message(row) for row in rows]

    def resolve_in_doubt(self, found: Mapping[str, str | None]) -> None:
        now = self._now()
        with self._write() as db:
            db.executemany(
                "UPDATE messages SET status = CASE WHEN ?1 IS NULL THEN 'planned' ELSE 'sent' END,"
                " provider_id = ?1, error = NULL, updated_at = ?2 WHERE key = ?3 AND status = 'in_doubt'",
                [(provider_id, now, key) for key, provider_id in found.items()],
            )

    def messages(self, keys: Sequence[str]) -> list[Message]:
        rows = self._db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE key IN (SELECT value FROM json_each(?)) ORDER BY key", (json.dumps(list(keys)),)
        )
        return [_message(row) for row in rows]

    def message_keys(self, status: str | None = None) -> list[str]:
        rows = self._db.execute("SELECT key FROM messages WHERE ? IS NULL OR status = ? ORDER BY key", (status, status))
        return [key for (key,) in rows]

    # ------------------------------------------------------------------ outcomes and offers

    def record_outcomes(self, outcomes: Sequence[Outcome]) -> int:
        with self._write() as db:
            before = db.total_changes
            db.executemany(
                "INSERT INTO outcomes VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(o.message_key, o.type, o.at.isoformat(), json.dumps(o.payload)) for o in outcomes],
            )
            return db.total_changes - before

    def outcomes(self, message_key: str) -> list[Outcome]:
        rows = self._db.execute("SELECT message_key, type, at, payload FROM outcomes WHERE message_key = ? ORDER BY at, type", (message_key,))
        return [Outcome(key, type_, _time(at), json.loads(payload)) for key, type_, at, payload in rows]

    def sent_since(self, since: datetime) -> list[Message]:
        rows = self._db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE status = 'sent' AND updated_at >= ? ORDER BY updated_at, key", (_utc_iso(since),)
        )
        return [_message(row) for row in rows]

    def report_tables(self, campaigns: Sequence[str] | None) -> tuple[Any, Any]:
        """Enrollments and sent messages with their outcome flags as Arrow
        tables, in one query each (campaignctl.report.collect.ReportTables): at a
        million enrollments, row objects would cost most of the report's time."""
        from campaignctl.report.collect import enrollment_table, message_table

        wanted = None if campaigns is None else json.dumps(list(campaigns))
        in_campaigns = "(?1 IS NULL OR campaign IN (SELECT value FROM json_each(?1)))"
        enrollments = self._db.execute(
            f"SELECT campaign, customer_id, grp, arm, entered_at FROM enrollments WHERE {in_campaigns}", (wanted,)).fetchall()
        messages = self._db.execute(
            "SELECT m.key, m.campaign, m.customer_id, m.step, m.channel, m.updated_at, m.cost, "
            "COALESCE(o.delivered, 0), COALESCE(o.opened, 0), COALESCE(o.clicked, 0), COALESCE(o.unsubscribed, 0) "
            "FROM messages m LEFT JOIN (SELECT message_key, MAX(type = 'delivered') AS delivered, MAX(type = 'opened') AS opened, "
            "MAX(type = 'clicked') AS clicked, MAX(type = 'unsubscribed') AS unsubscribed FROM outcomes GROUP BY message_key) o "
            f"ON o.message_key = m.key WHERE m.status = 'sent' AND {in_campaigns.replace('campaign', 'm.campaign')}", (wanted,)).fetchall()
        return enrollment_table(enrollments), message_table(messages)

    def outcome_types(self, keys: Sequence[str]) -> dict[str, frozenset[str]]:
        found: dict[str, set[str]] = {}
        rows = self._db.execute(
            "SELECT DISTINCT message_key, type FROM outcomes WHERE message_key IN (SELECT value FROM json_each(?))", (json.dumps(list(keys)),)
        )
        for key, type_ in rows:
            found.setdefault(key, set()).add(type_)
        return {key: frozenset(types) for key, types in found.items()}

    def unsubscribed(self) -> list[tuple[str, str]]:
        rows = self._db.execute(
            "SELECT DISTINCT m.customer_id, m.channel FROM outcomes o JOIN messages m ON m.key = o.message_key"
            " WHERE o.type = 'unsubscribed' ORDER BY 1, 2"
        )
        return [(customer, channel) for customer, channel in rows]

    def invalid_addresses(self) -> list[tuple[str, str, str | None]]:
        rows = self._db.execute(
            "SELECT DISTINCT m.customer_id, m.channel, json_extract(o.payload, '$.address') FROM outcomes o JOIN messages m ON m.key = o.message_key"
            " WHERE o.type = 'bounced' AND json_extract(o.payload, '$.address_invalid') = 1 ORDER BY 1, 2, 3"  # JSON true reads as 1
        )
        return [(customer, channel, address) for customer, channel, address in rows]

    def spend(self, since: datetime | None = None) -> dict[str, float]:
        rows = self._db.execute(
            "SELECT campaign, sum(cost) FROM messages WHERE status = 'sent' AND (?1 IS NULL OR updated_at >= ?1) GROUP BY campaign ORDER BY campaign",
            (_utc_iso(since) if since else None,),
        )
        return {campaign: float(total) for campaign, total in rows}

    def issue_offers(self, offers: Sequence[IssuedOffer]) -> list[str]:
        with self._write() as db:
            before = db.execute("SELECT max(rowid) FROM issued_offers").fetchone()[0] or 0
            text = _Memo()  # a batch shares a few timestamps and terms: each is encoded once
            db.executemany(
                f"INSERT INTO issued_offers ({_OFFER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(o.key, o.campaign, o.customer_id, o.offer, o.code, text(o.issued_at, _iso), o.status, o.pool, text(o.expires_at, _iso),
                  text(o.terms, _terms_json)) for o in offers],
            )
            # New rows have rowids after every earlier one (one writer at a time).
            return [key for (key,) in db.execute("SELECT key FROM issued_offers WHERE rowid > ? ORDER BY rowid", (before,))]

    def issued_offers(self, campaign: str) -> list[IssuedOffer]:
        rows = self._db.execute(f"SELECT {_OFFER_COLUMNS} FROM issued_offers WHERE campaign = ? ORDER BY issued_at, key", (campaign,))
        return _issued(rows)

    def issued_offers_by_key(self, keys: Sequence[str]) -> list[IssuedOffer]:
        rows = self._db.execute(
            f"SELECT {_OFFER_COLUMNS} FROM issued_offers WHERE key IN (SELECT value FROM json_each(?)) ORDER BY key", (json.dumps(list(keys)),)
        )
        return _issued(rows)

    # ------------------------------------------------------------------ promo codes and offer exports

    def hold_promo_codes(self, pool: str, wanted: Mapping[str, str]) -> dict[str, str]:
        now = self._now()
        holders = json.dumps(list(wanted))
        with self._write() as db:
            # ON CONFLICT DO NOTHING covers both constraints: a code held already
            # (primary key) and a holder holding one already (unique index).
            before = db.total_changes
            db.executemany(
                "INSERT INTO promo_codes (pool, code, holder, held_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(pool, code, holder, now) for holder, code in wanted.items()],
            )
            if db.total_changes - before == len(wanted):  # no conflict (the usual case): every holder got its proposal
                return dict(wanted)
            rows = db.execute(
                "SELECT holder, code FROM promo_codes WHERE pool = ? AND holder IN (SELECT value FROM json_each(?))", (pool, holders)
            )
            return dict(rows.fetchall())

    def promo_codes(self, pool: str) -> dict[str, str]:
        return dict(self._db.execute("SELECT holder, code FROM promo_codes WHERE pool = ?", (pool,)).fetchall())

    def unexported_offers(self, sink: str, after: str | None, limit: int) -> list[IssuedOffer]:
        rows = self._db.execute(
            f"SELECT {_OFFER_COLUMNS} FROM issued_offers i WHERE (?1 IS NULL OR key > ?1)"
            " AND NOT EXISTS (SELECT 1 FROM offer_exports e WHERE e.sink = ?2 AND e.key = i.key) ORDER BY key LIMIT ?3",
            (after, sink, limit),
        )
        return _issued(rows)

    def mark_offers_exported(self, sink: str, keys: Sequence[str]) -> None:
        now = self._now()
        with self._write() as db:
            db.executemany("INSERT INTO offer_exports VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [(sink, key, now) for key in keys])

    # ------------------------------------------------------------------ the apply lock

    def acquire_lock(self, owner: str, timeout: float) -> None:
        if self._holds_lock:
            return
        deadline = time.monotonic() + timeout
        while not self._try_lock(owner):
            if time.monotonic() >= deadline:
                raise LockTimeout(self.lock_holder(), timeout, str(self.path))
            time.sleep(LOCK_POLL_SECONDS)
        self._holds_lock = True

    def _try_lock(self, owner: str) -> bool:
        pid, host = this_process()
        with self._write() as db:
            holder = self._holder(db)
            if holder is not None and not self._is_stale(holder, host):
                return False
            if holder is not None:
                log.warning("breaking the state lock of %s: that process is gone", holder.describe())
            db.execute("INSERT OR REPLACE INTO state_lock VALUES (?, ?, ?, ?, ?)", (LOCK_NAME, owner, pid, host, self._now()))
            return True

    @staticmethod
    def _is_stale(holder: LockHolder, host: str) -> bool:
        # A holder on this host whose process has exited cannot be sending: its
        # lock is left over from a crash (SIGKILL, OOM) and is safe to take over.
        # A holder on another host cannot be checked from here; force_unlock.
        return holder.host == host and not process_is_alive(holder.pid)

    def _holder(self, db: sqlite3.Connection) -> LockHolder | None:
        row = db.execute("SELECT owner, pid, host, acquired_at FROM state_lock WHERE name = ?", (LOCK_NAME,)).fetchone()
        return LockHolder(row[0], row[1], row[2], _time(row[3])) if row else None

    def release_lock(self) -> None:
        if not self._holds_lock:
            return
        pid, host = this_process()
        with self._write() as db:
            db.execute("DELETE FROM state_lock WHERE name = ? AND pid = ? AND host = ?", (LOCK_NAME, pid, host))
        self._holds_lock = False

    def lock_holder(self) -> LockHolder | None:
        return self._holder(self._db)

    def force_unlock(self) -> LockHolder | None:
        with self._write() as db:
            holder = self._holder(db)
            db.execute("DELETE FROM state_lock WHERE name = ?", (LOCK_NAME,))
        return holder

    def close(self) -> None:
        try:
            self.release_lock()
        finally:
            self._db.close()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _utc_iso(value: datetime) -> str:
    """Timestamps are stored as UTC ISO text, so they compare as text only in UTC."""
    return value.astimezone(timezone.utc).isoformat()


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _message(row: tuple) -> Message:
    key, campaign, customer, channel, step, status, attempts, provider_id, cost, created, updated, error, payload = row
    return Message(
        key, campaign, customer, channel, step, MessageStatus(status), attempts, provider_id, cost, _time(created), _time(updated), error,
        json.loads(payload),
    )


class _Memo:
    """Convert each distinct value once (by identity): rows of a batch share timestamps and terms."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[Any, Any]] = {}

    def __call__(self, value: Any, convert: Callable[[Any], Any]) -> Any:
        found = self._seen.get(id(value))
        if found is None or found[0] is not value:
            found = self._seen[id(value)] = (value, convert(value))
        return found[1]


def _terms_json(terms: Mapping[str, Any]) -> str:
    return json.dumps(dict(terms), sort_keys=True)


def _issued(rows) -> list[IssuedOffer]:
    times: dict[str | None, datetime | None] = {}
    terms: dict[str, Any] = {}  # rows of one offer share the terms text; they share the decoded dict too (read-only)
    found = []
    for key, campaign, customer, offer, code, issued_at, status, pool, expires_at, terms_text in rows:
        for text in (issued_at, expires_at):
            if text not in times:
                times[text] = _time(text)
        if terms_text not in terms:
            terms[terms_text] = json.loads(terms_text)
        found.append(IssuedOffer(key, campaign, customer, offer, code, times[issued_at], status, pool, times[expires_at], terms[terms_text]))
    return found


_OPTIONS = ("path",)


def create_store(config, project_root: Path) -> SqliteStateStore:
    """The factory registered as ``sqlite``: option ``path`` (relative to the project)."""
    options = dict(config.options) if config is not None else {}
    if problem := unknown_options(options, _OPTIONS, "sqlite state store"):
        raise StateError(problem)
    path = Path(options.get("path") or DEFAULT_PATH)
    return SqliteStateStore(path if path.is_absolute() else Path(project_root) / path)


@hookimpl
def register_state_stores(register) -> None:
    register("sqlite", create_store)
