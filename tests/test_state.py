"""The state-store contract (campaignctl.state.StateStore): one harness, every
store. SQLite runs on a real file; PostgreSQL on the real server of the
``postgres_dsn`` fixture, in a fresh schema per test."""

from __future__ import annotations

import importlib
import sqlite3
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from campaignctl import plugins
from campaignctl.model import PluginConfig
from campaignctl.state import (
    LATEST_VERSION,
    MIGRATIONS,
    CampaignVersion,
    Enrollment,
    IssuedOffer,
    LedgerEntry,
    LockTimeout,
    MessageResult,
    MessageStatus,
    NewMessage,
    Outcome,
    StateError,
    StateStore,
    locked,
    pending_migrations,
)

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def pgstate():
    """The PostgreSQL store's module, also before its entry point is installed."""
    try:
        return importlib.import_module("campaignctl_pgstate")
    except ImportError:
        sys.path.insert(0, str(ROOT / "plugins"))
        return importlib.import_module("campaignctl_pgstate")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_store(request, tmp_path):
    """``open_store()`` opens a store on this test's state; call it again for a
    second connection to the same state (another worker, or a reopen)."""
    opened = []
    if request.param == "sqlite":
        from campaignctl_sqlite import SqliteStateStore

        def factory():
            return SqliteStateStore(tmp_path / "state.db")
    else:
        dsn, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("postgres_schema")

        def factory():
            return pgstate().PostgresStateStore(dsn, schema)

    def open_new() -> StateStore:
        store = factory()
        opened.append(store)
        return store

    yield open_new
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store) -> StateStore:
    return open_store()


def new_message(n: int, channel: str = "email", cost: float = 0.15) -> NewMessage:
    return NewMessage(f"spring/v1/{n}/0/2025-03-01", "spring", str(n), channel, 0, cost)


# --------------------------------------------------------------------------- the hook


def test_hook_register_state_stores(tmp_path):
    factory = plugins.registry().state_stores["sqlite"]
    store = factory(PluginConfig("sqlite", {"path": "state/here.db"}), tmp_path)
    try:
        assert isinstance(store, StateStore)
        assert store.reserve_messages([new_message(1)]) == {new_message(1).key: LedgerEntry(MessageStatus.PLANNED, 0)}
        assert (tmp_path / "state/here.db").is_file()
    finally:
        store.close()


def test_sqlite_default_path_is_in_the_project(tmp_path):
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
    store.close()
    assert (tmp_path / ".campaignctl" / "state.db").is_file()


def test_unknown_options_are_refused(tmp_path):
    with pytest.raises(StateError, match="unknown option.*pth"):
        plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {"pth": "x.db"}), tmp_path)


# --------------------------------------------------------------------------- migrations


def test_migrations_are_numbered_from_one_without_gaps():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert pending_migrations(0) == MIGRATIONS
    assert pending_migrations(LATEST_VERSION) == ()


def test_migrations_are_recorded_and_idempotent(open_store):
    first = open_store()
    assert first.schema_versions() == [m.version for m in MIGRATIONS]
    first.reserve_messages([new_message(1)])
    again = open_store()  # reopening applies nothing twice and keeps the data
    assert again.schema_versions() == [m.version for m in MIGRATIONS]
    assert again.message_keys() == [new_message(1).key]


def test_a_newer_schema_is_refused(tmp_path):
    from campaignctl_sqlite import SqliteStateStore

    SqliteStateStore(tmp_path / "state.db").close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("INSERT INTO schema_version VALUES (?, 'from the future', '2030-01-01')", (LATEST_VERSION + 1,))
    with pytest.raises(StateError, match=f"schema version {LATEST_VERSION + 1}.*upgrade campaignctl"):
        SqliteStateStore(tmp_path / "state.db")


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    from campaignctl_sqlite import SqliteStateStore

    (tmp_path / "state.db").write_text("not a database, " * 100)
    with pytest.raises(StateError, match="cannot open the state database"):
        SqliteStateStore(tmp_path / "state.db")


# --------------------------------------------------------------------------- the ledger


def test_a_key_is_reserved_once_ever(store):
    one = new_message(1)
    assert store.reserve_messages([one, new_message(2)]) == {
        one.key: LedgerEntry(MessageStatus.PLANNED, 0),
        new_message(2).key: LedgerEntry(MessageStatus.PLANNED, 0),
    }
    assert store.mark_sending([one.key]) == [one.key]
    store.finish_messages([MessageResult(one.key, MessageStatus.SENT, "p-1")])
    # Reserving again, even with other values, leaves the row as it is.
    again = store.reserve_messages([NewMessage(one.key, "other", "99", "sms", 3, 9.0)])
    assert again == {one.key: LedgerEntry(MessageStatus.SENT, 1)}
    (row,) = store.messages([one.key])
    assert (row.campaign, row.channel, row.status, row.provider_id, row.cost) == ("spring", "email", "sent", "p-1", 0.15)
    assert store.message_keys() == sorted([one.key, new_message(2).key])


def test_only_sendable_rows_can_be_marked_sending(store):
    keys = [new_message(n).key for n in range(4)]
    store.reserve_messages([new_message(n) for n in range(4)])
    assert sorted(store.mark_sending(keys[:2])) == keys[:2]
    assert store.mark_sending(keys[:3]) == [keys[2]]  # the first two are already sending
    store.finish_messages([
        MessageResult(keys[0], MessageStatus.SENT, "p0"),
        MessageResult(keys[1], MessageStatus.FAILED_TEMPORARY, error="429"),
        MessageResult(keys[2], MessageStatus.FAILED_PERMANENT, error="no such mailbox"),
    ])
    assert sorted(store.mark_sending(keys)) == [keys[1], keys[3]]  # retryable and planned
    assert {m.key: m.attempts for m in store.messages(keys)} == {keys[0]: 1, keys[1]: 2, keys[2]: 1, keys[3]: 1}
    assert store.messages([keys[2]])[0].error == "no such mailbox"


def test_a_result_only_settles_a_row_that_is_sending(store):
    key = new_message(1).key
    store.reserve_messages([new_message(1)])
    store.finish_messages([MessageResult(key, MessageStatus.SENT, "p")])  # never marked sending
    assert store.messages([key])[0].status == MessageStatus.PLANNED


def test_interrupted_rows_become_in_doubt_and_are_resolved(store):
    keys = [new_message(n).key for n in range(3)]
    store.reserve_messages([new_message(n) for n in range(3)])
    store.mark_sending(keys)
    assert store.mark_interrupted() == sorted(keys)
    assert [m.key for m in store.in_doubt()] == sorted(keys)
    assert store.mark_sending(keys) == []  # in doubt is not sendable
    store.resolve_in_doubt({keys[0]: "provider-0", keys[1]: None})  # keys[2]: nobody can tell
    rows = {m.key: m for m in store.messages(keys)}
    assert (rows[keys[0]].status, rows[keys[0]].provider_id) == (MessageStatus.SENT, "provider-0")
    assert rows[keys[1]].status == MessageStatus.PLANNED
    assert [m.key for m in store.in_doubt()] == [keys[2]]
    assert store.message_keys(status="in_doubt") == [keys[2]]


def test_two_connections_reserving_the_same_keys(open_store):
    a, b = open_store(), open_store()
    a.reserve_messages([new_message(n) for n in range(100)])
    entries = b.reserve_messages([new_message(n) for n in range(50, 150)])
    assert len(entries) == 100 and len(a.message_keys()) == 150
    assert set(a.mark_sending([new_message(n).key for n in range(60)])).isdisjoint(b.mark_sending([new_message(n).key for n in range(60)]))


# --------------------------------------------------------------------------- runs, versions, enrollments, outcomes, offers


def test_runs(store):
    first = store.begin_run({"plan": "abc"})
    second = store.begin_run()
    store.finish_run(first, "succeeded", {"sent": 3})
    runs = store.runs()
    assert [r.id for r in runs] == [second, first]
    assert (runs[1].status, runs[1].summary, runs[1].finished_at is not None) == ("succeeded", {"sent": 3}, True)
    assert (runs[0].status, runs[0].finished_at) == ("running", None)


def test_campaign_versions_keep_their_first_sighting(store):
    v1 = CampaignVersion("spring", "h1", {"steps": [1]}, T0)
    assert store.record_campaign_versions([v1]) == ["spring/h1"]
    later = CampaignVersion("spring", "h1", {"steps": [1]}, T0 + timedelta(days=1))
    assert store.record_campaign_versions([later, CampaignVersion("spring", "h2", {"steps": [2]}, T0 + timedelta(days=2))]) == ["spring/h2"]
    assert [(v.version, v.first_seen, v.definition) for v in store.campaign_versions("spring")] == [
        ("h1", T0, {"steps": [1]}), ("h2", T0 + timedelta(days=2), {"steps": [2]}),
    ]


def test_enrollments_are_upserted(store):
    e = Enrollment("spring", "42", "h1", "treatment", "A", 0, "active", None, T0, T0 + timedelta(days=1))
    store.upsert_enrollments([e, Enrollment("spring", "7", "h1", "control", None, 0, "active", None, T0, None)])
    store.upsert_enrollments([Enrollment("spring", "42", "h1", "treatment", "A", 1, "exited", "purchased", T0, None)])
    assert [(x.customer_id, x.group, x.step, x.status, x.exit_reason) for x in store.enrollments("spring")] == [
        ("42", "treatment", 1, "exited", "purchased"), ("7", "control", 0, "active", None),
    ]
    assert [x.customer_id for x in store.enrollments("spring", status="active")] == ["7"]
    assert store.enrollments("spring")[1].entered_at == T0


def test_enrollments_of_every_campaign_keep_the_planners_fields(store):
    store.upsert_enrollments([
        Enrollment("spring", "42", "h1", "holdout", None, 0, "completed", "holdout", T0, None),
        Enrollment("winback", "42", "h2", "treatment", None, 1, "active", None, T0, T0, last_message_key="winback/h2/42/0/w", entries=2),
    ])
    every = store.enrollments()
    assert [(e.campaign, e.group, e.last_message_key, e.entries) for e in every] == [
        ("spring", "holdout", None, 1), ("winback", "treatment", "winback/h2/42/0/w", 2),
    ]


def test_current_versions_are_replaced_as_a_whole(store):
    store.set_current_versions({"spring": "h1", "winback": "h2"})
    store.set_current_versions({"winback": "h3"})  # spring was removed from the project
    assert store.current_versions() == {"winback": "h3"}


def test_what_the_planner_reads_from_the_ledger(store):
    messages = [new_message(i) for i in range(3)]
    store.reserve_messages(messages)
    store.mark_sending([m.key for m in messages[:2]])
    store.finish_messages([MessageResult(m.key, MessageStatus.SENT, "p") for m in messages[:2]])
    store.record_outcomes([Outcome(messages[0].key, "opened", T0), Outcome(messages[0].key, "unsubscribed", T0)])
    sent = store.sent_since(T0 - timedelta(days=1))
    assert sorted(m.key for m in sent) == sorted(m.key for m in messages[:2])
    assert store.sent_since(datetime.now(timezone.utc) + timedelta(days=1)) == []
    assert store.outcome_types([m.key for m in messages]) == {messages[0].key: frozenset({"opened", "unsubscribed"})}
    assert store.unsubscribed() == [(messages[0].customer_id, messages[0].channel)]
    assert store.spend() == pytest.approx({"spring": 0.30})


def test_only_bounces_that_say_the_address_is_gone_mark_it_invalid(store):
    messages = [new_message(i) for i in range(3)]
    store.reserve_messages(messages)
    store.record_outcomes([
        Outcome(messages[0].key, "bounced", T0, {"address_invalid": True, "address": "5f1e", "error": "APNs 410 Unregistered"}),
        Outcome(messages[1].key, "bounced", T0, {"stat": "UNDELIV"}),  # a receipt: this time, not for good
        Outcome(messages[2].key, "bounced", T0, {"address_invalid": False}),
    ])
    assert store.invalid_addresses() == [(messages[0].customer_id, messages[0].channel, "5f1e")]
    store.reserve_messages([new_message(3)])
    store.record_outcomes([Outcome(new_message(3).key, "bounced", T0, {"address_invalid": True})])  # recorded before addresses were kept
    assert store.invalid_addresses() == [(messages[0].customer_id, messages[0].channel, "5f1e"), (new_message(3).customer_id, new_message(3).channel, None)]


def test_writes_inside_atomically_commit_together_or_not_at_all(store):
    enrollment = Enrollment("spring", "1", "v1", "treatment", None, 1, "active", None, T0, None, last_message_key=new_message(1).key)
    with pytest.raises(RuntimeError):
        with store.atomically():
            store.reserve_messages([new_message(1)])
            store.upsert_enrollments([enrollment])
            raise RuntimeError("killed between the two writes")
    assert store.message_keys() == [] and store.enrollments() == []
    with store.atomically():
        store.reserve_messages([new_message(1)])
        store.upsert_enrollments([enrollment])
    assert store.message_keys() == [new_message(1).key] and [e.customer_id for e in store.enrollments()] == ["1"]


def test_outcomes_may_be_replayed(store):
    key = new_message(1).key
    store.reserve_messages([new_message(1)])
    opened = Outcome(key, "opened", T0, {"ua": "mail"})
    assert store.record_outcomes([opened, Outcome(key, "clicked", T0 + timedelta(minutes=1))]) == 2
    assert store.record_outcomes([opened]) == 0
    assert [(o.type, o.payload) for o in store.outcomes(key)] == [("opened", {"ua": "mail"}), ("clicked", {})]


def test_an_offer_is_issued_once(store):
    offer = IssuedOffer("spring/v1/42/0", "spring", "42", "ten_off", "SPR-1", T0, "issued")
    assert store.issue_offers([offer]) == [offer.key]
    assert store.issue_offers([IssuedOffer(offer.key, "spring", "42", "ten_off", "SPR-2", T0, "issued")]) == []
    assert [o.code for o in store.issued_offers("spring")] == ["SPR-1"]


# --------------------------------------------------------------------------- the lock


def test_the_lock_excludes_a_second_holder_and_names_the_first(open_store):
    first, second = open_store(), open_store()
    first.acquire_lock("apply by alice", timeout=0)
    holder = second.lock_holder()
    assert holder.owner == "apply by alice"
    started = time.monotonic()
    with pytest.raises(LockTimeout, match=r"held by 'apply by alice' \(pid \d+ on .*force-unlock"):
        second.acquire_lock("apply by bob", timeout=0.3)
    assert time.monotonic() - started >= 0.3
    first.release_lock()
    assert second.lock_holder() is None
    with locked(second, "apply by bob", timeout=0):
        assert first.lock_holder().owner == "apply by bob"
    assert first.lock_holder() is None


def test_force_unlock_frees_the_lock_and_says_who_held_it(open_store):
    first, second = open_store(), open_store()
    first.acquire_lock("stuck apply", timeout=0)
    assert second.force_unlock().owner == "stuck apply"
    second.acquire_lock("next apply", timeout=1)
    assert second.lock_holder().owner == "next apply"
    second.release_lock()
    assert second.force_unlock() is None


def _open_and_close(path: Path, barrier) -> None:
    from campaignctl_sqlite import SqliteStateStore

    barrier.wait()
    SqliteStateStore(path).close()


def test_several_processes_opening_a_new_sqlite_state_at_once_all_succeed(tmp_path):
    """Two schedulers starting on a fresh project: switching the new file to WAL
    once made one of them fail with "database is locked"."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for attempt in range(15):
        barrier = context.Barrier(3)
        path = tmp_path / f"state-{attempt}.db"
        processes = [context.Process(target=_open_and_close, args=(path, barrier)) for _ in range(3)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=60)
        assert [process.exitcode for process in processes] == [0, 0, 0]
