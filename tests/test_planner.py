"""plan() scenarios: given a small project, hand-built audiences, facts and a
state snapshot at a simulated moment, when plan runs, then these customers
get these messages (or are held back, deferred, exited) and no others."""

from __future__ import annotations

import gc
import hashlib
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow
import pytest

from campaignctl.contracts import address_fingerprint
from campaignctl.facts import CustomerFacts
from campaignctl.planner import (
    Plan,
    SentMessage,
    SnapshotEnrollment,
    StateSnapshot,
    assignment,
    campaign_versions,
    plan,
)
from campaignctl.project import load_project
from campaignctl.segments.evaluate import Audiences

UTC = timezone.utc
MSK = timezone(timedelta(hours=3))

PROJECT = """\
version: 1
name: shop
timezone: Europe/Moscow
currency: RUB
data_source:
  plugin: duckdb
  options: {path: data}
channels:
  email: {plugin: outbox, kind: email, cost: 0.15}
  sms: {plugin: outbox, kind: sms, cost: 2.9}
  push: {plugin: outbox, kind: push, cost: 0.05}
policies:
  global_holdout: HOLDOUT
  quiet_hours: {start: "21:00", end: "09:00"}
  frequency_caps: CAPS
  suppress_inactive_days: 365
  monthly_budget: 1000000
"""

BASE = """\
version: 1
segments:
  everyone:
    where: {consent: email}
  cart:
    where: {consent: push}
  churn:
    where: {orders: {metric: days_since_last, gt: 90}}
templates:
  offer_email:
    channel: email
    subject: "{{ customer.first_name }}, for you"
    mjml: templates/offer.mjml
  offer_sms:
    channel: sms
    body: "{{ customer.first_name }}, 10% off"
  offer_push:
    channel: push
    title: For you
    body: "{{ customer.first_name }}, 10% off"
offers:
  ten: {kind: percent_discount, percent: 10}
  fifteen: {kind: percent_discount, percent: 15}
cascades:
  email_then_sms:
    goal: {order_within: 7d}
    steps:
      - channel: email
        template: offer_email
      - wait: 1d
        if: not_opened
        channel: sms
        template: offer_sms
        offer: fifteen
  cheapest_first:
    steps:
      - channel: cheapest
        templates: {push: offer_push, email: offer_email}
"""

MJML = "<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ customer.first_name }}</mj-text></mj-column></mj-section></mj-body></mjml>\n"


def make_project(root: Path, campaigns: str, *, holdout: float = 0.0, caps: str = "[]"):
    files = {
        "campaignctl.yaml": PROJECT.replace("HOLDOUT", str(holdout)).replace("CAPS", caps),
        "base.yaml": BASE,
        "campaigns.yaml": "version: 1\ncampaigns:\n" + campaigns,
        "templates/offer.mjml": MJML,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return load_project(root)


def audiences(now: datetime, **segments) -> Audiences:
    members = {name: np.array(sorted(ids), dtype=np.int64) for name, ids in segments.items()}
    for name in ("everyone", "cart", "churn"):
        members.setdefault(name, np.array([], dtype=np.int64))
    every = sorted({int(i) for ids in members.values() for i in ids})
    return Audiences(members, pyarrow.table({"customer_id": pyarrow.array(every, pyarrow.int64())}), len(every), 0.0, now)


def facts(ids, now: datetime, overrides=None, events=()) -> CustomerFacts:
    """Every customer reachable by email, SMS and push in Moscow, last order 30 days ago;
    ``overrides`` maps a customer id to the fields that differ."""
    rows = []
    for i in ids:
        row = dict(customer_id=i, email=f"c{i}@example.com", phone=f"+7900{i:07d}", push_token=f"tok{i}", timezone="Europe/Moscow",
                   consents={"email": True, "sms": True, "push": True}, created_at=now - timedelta(days=800),
                   first_order_at=now - timedelta(days=700), last_order_at=now - timedelta(days=30))
        row.update((overrides or {}).get(i, {}))
        rows.append(row)
    return CustomerFacts.from_rows(rows, events)


def at(text: str) -> datetime:
    """A Moscow wall-clock time as an instant."""
    return datetime.fromisoformat(text).replace(tzinfo=MSK)


def enrolled(p: Plan, campaign: str | None = None):
    return {e.customer_id: e for e in p.enrollments if campaign in (None, e.campaign)}


def sent_to(p: Plan, campaign: str | None = None) -> list[int]:
    return sorted(m.customer_id for m in p.messages if campaign in (None, m.campaign))


def applied(p: Plan, before: StateSnapshot = StateSnapshot(), **changes) -> StateSnapshot:
    """The snapshot after applying ``p`` (what apply would record), so a scenario can go on."""
    rows = {(e.campaign, e.customer_id): e for e in before.enrollments}
    for a in p.enrollments:
        rows[(a.campaign, a.customer_id)] = SnapshotEnrollment(a.campaign, a.customer_id, a.version, a.group, a.arm, a.step, a.status,
                                                               a.entered_at, a.next_step_at, a.last_message_key, a.entries, a.exit_reason)
    versions = dict(before.versions)
    versions.update({c.name: c.new_version for c in p.campaign_changes if c.new_version})
    definitions = dict(before.definitions)
    definitions.update({f"{c.name}/{c.new_version}": c.definition for c in p.campaign_changes if c.definition})
    sends = before.recent_sends + tuple(SentMessage(m.customer_id, p.now, m.channel, m.campaign) for m in p.messages)
    spend = dict(before.spend)
    for m in p.messages:
        spend[m.campaign] = spend.get(m.campaign, 0.0) + m.cost
    snapshot = StateSnapshot(versions=versions, definitions=definitions, enrollments=tuple(rows.values()), recent_sends=sends,
                             unsubscribed=before.unsubscribed, outcomes=before.outcomes, spend=spend)
    return replace(snapshot, **changes)


BROADCAST = """\
  promo:
    kind: broadcast
    audience: everyone
    schedule: {at: "2026-12-01T10:00"}
    message: {channel: email, template: offer_email}
    offer: ten
    control: CONTROL
"""


# --------------------------------------------------------------------------- groups and hashing


def offline_splitmix64(seed: int, n: int) -> int:
    """The n-th output of SplitMix64 seeded with ``seed``, in plain integers."""
    z = (seed + n * 0x9E3779B97F4A7C15) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return z ^ (z >> 31)


def offline_assignment(salt: str, campaign: str, customer_id: int) -> float:
    """docs/plan.md's formula, written out as an analyst would."""
    key = int.from_bytes(hashlib.sha256(f"{salt}/{campaign}".encode("utf-8")).digest()[:8], "big")
    return (offline_splitmix64(key, customer_id) >> 11) / 2**53


def test_the_offline_formula_is_splitmix64():
    # Rosetta Code's reference outputs of SplitMix64 (Vigna's splitmix64.c) for seed 1234567.
    assert [offline_splitmix64(1234567, n) for n in range(1, 6)] == [
        6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431, 16408922859458223821]


def plan_md_draw_sql() -> str:
    """The DuckDB query docs/plan.md gives analysts, verbatim."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "plan.md").read_text(encoding="utf-8")
    section = text.split("## Groups and arms: the formulas", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```sql\n")
    assert len(blocks) == 2, "docs/plan.md: expected one ```sql block in 'Groups and arms: the formulas'"
    return blocks[1].split("```", 1)[0]


def test_the_documented_duckdb_query_recomputes_the_planners_draws():
    import duckdb

    from campaignctl.planner.hashing import assignments

    rng = np.random.default_rng(20261203)
    ids = np.unique(np.concatenate([
        np.arange(-1000, 2000, dtype=np.int64),
        rng.integers(-2**63, 2**63 - 1, size=2000, dtype=np.int64, endpoint=True),
        np.array([-2**63, -2**63 + 1, -2**53 - 1, 2**32, 2**53 + 1, 10**18, 2**63 - 2, 2**63 - 1], dtype=np.int64),
    ]))
    connection = duckdb.connect()
    connection.execute("CREATE TABLE customers AS SELECT unnest(?::BIGINT[]) AS customer_id", [ids.tolist()])
    rows = connection.execute(plan_md_draw_sql()).fetchall()
    assert [row[0] for row in rows] == ids.tolist()
    holdout_u = np.array([row[1] for row in rows])
    control_u = np.array([row[2] for row in rows])
    # bit for bit, not approximately
    assert holdout_u.tolist() == assignments("uyut-home", "", ids).tolist()
    assert control_u.tolist() == assignments("uyut-home", "churn_winback", ids).tolist()
    for i in range(0, len(ids), 97):
        assert holdout_u[i] == offline_assignment("uyut-home", "", int(ids[i]))
        assert control_u[i] == offline_assignment("uyut-home", "churn_winback", int(ids[i]))


def test_control_and_holdout_never_get_messages_and_match_an_offline_recomputation(tmp_path):
    project = make_project(tmp_path, BROADCAST.replace("CONTROL", "0.2"), holdout=0.05)
    now = at("2026-12-01T10:05")
    ids = list(range(1, 2001))
    p = plan(project, audiences(now, everyone=ids), StateSnapshot(), now, facts(ids, now))

    expected = {}
    for i in ids:
        if offline_assignment("shop", "", i) < 0.05:
            expected[i] = "holdout"
        elif offline_assignment("shop", "promo", i) < 0.2:
            expected[i] = "control"
        else:
            expected[i] = "treatment"
    assert {i: e.group for i, e in enrolled(p).items()} == expected
    assert sent_to(p) == sorted(i for i, g in expected.items() if g == "treatment")
    untreated = [e for e in p.enrollments if e.group != "treatment"]
    assert untreated and all(e.status == "completed" and e.next_step_at is None for e in untreated)
    audience = p.audiences[0]
    assert (audience.holdout, audience.control, audience.treatment) == (
        sum(g == "holdout" for g in expected.values()), sum(g == "control" for g in expected.values()),
        sum(g == "treatment" for g in expected.values()))
    assert 60 <= audience.holdout <= 140 and 300 <= audience.control <= 460
    # stable across runs: the same inputs give the same plan
    assert plan(project, audiences(now, everyone=ids), StateSnapshot(), now, facts(ids, now)) == p
    assert assignment("shop", "promo", 7) == offline_assignment("shop", "promo", 7)


def test_arms_split_by_weight(tmp_path):
    campaign = BROADCAST.replace("CONTROL", "0") + "    arms:\n      - {name: ten, offer: ten, weight: 1}\n      - {name: fifteen, offer: fifteen, weight: 3}\n"
    project = make_project(tmp_path, campaign)
    now = at("2026-12-01T10:05")
    ids = list(range(1, 8001))
    p = plan(project, audiences(now, everyone=ids), StateSnapshot(), now, facts(ids, now))
    offers = [m.offer for m in p.messages]
    assert len(offers) == 8000
    assert abs(offers.count("ten") / 8000 - 0.25) < 0.02
    assert {m.arm for m in p.messages if m.offer == "fifteen"} == {"fifteen"}
    # the arm hash is independent of the control hash and recomputable offline
    for m in p.messages[:50]:
        u = offline_assignment("shop#arms", "promo", m.customer_id)
        assert m.arm == ("ten" if u * 4 < 1 else "fifteen")


# --------------------------------------------------------------------------- campaign kinds


def test_broadcast_sends_once_per_window_with_stable_keys(tmp_path):
    project = make_project(tmp_path, BROADCAST.replace("CONTROL", "0"))
    ids = [1, 2, 3]
    before = at("2026-12-01T09:55")
    assert plan(project, audiences(before, everyone=ids), StateSnapshot(), before, facts(ids, before)).messages == ()

    now = at("2026-12-01T10:05")
    first = plan(project, audiences(now, everyone=ids), StateSnapshot(), now, facts(ids, now))
    version = campaign_versions(project)["promo"][0]
    assert [m.key for m in first.messages] == [f"promo/{version}/{i}/0/2026-12-01" for i in ids]
    assert all(m.due_at == at("2026-12-01T10:00") for m in first.messages)
    # a rerun at the same moment gives the same keys
    assert plan(project, audiences(now, everyone=ids), StateSnapshot(), now, facts(ids, now)).messages == first.messages

    # five minutes later, after apply, nobody is enrolled or messaged again; a newcomer still is (same window)
    later = now + timedelta(minutes=5)
    again = plan(project, audiences(later, everyone=ids + [4]), applied(first), later, facts(ids + [4], later))
    assert sent_to(again) == [4]
    assert again.messages[0].key.endswith("/4/0/2026-12-01")
    # two days later the broadcast is over
    late = now + timedelta(days=2)
    assert plan(project, audiences(late, everyone=ids + [5]), applied(first), late, facts(ids + [5], late)).messages == ()


def test_a_broadcast_that_never_ran_is_a_violation(tmp_path):
    project = make_project(tmp_path, BROADCAST.replace("CONTROL", "0"))
    now = at("2026-12-03T10:00")
    p = plan(project, audiences(now, everyone=[1]), StateSnapshot(), now, facts([1], now))
    assert [(v.rule, v.campaign) for v in p.violations] == [("broadcast_missed", "promo")]
    assert p.violations[0].numbers["hours_late"] == 48
    assert p.exit_code() == 1


RECURRING = """\
  daily:
    kind: recurring
    audience: churn
    schedule: {every: daily, window: {start: "10:00", end: "20:00"}}
    message: {channel: email, template: offer_email}
    CAPS
"""


def test_recurring_daily_runs_within_its_window_and_respects_reentry(tmp_path):
    project = make_project(tmp_path, RECURRING.replace("CAPS", "caps: {reentry_after: 2d}"))
    ids = [1, 2]
    early = at("2026-12-01T09:30")
    assert plan(project, audiences(early, churn=ids), StateSnapshot(), early, facts(ids, early)).enrollments == ()

    now = at("2026-12-01T12:00")
    day1 = plan(project, audiences(now, churn=ids), StateSnapshot(), now, facts(ids, now))
    assert sent_to(day1) == ids
    assert {e.entered_at for e in day1.enrollments} == {at("2026-12-01T10:00")}
    assert all(m.key.endswith("/2026-12-01") for m in day1.messages)

    state = applied(day1)
    later = at("2026-12-01T18:00")
    assert plan(project, audiences(later, churn=ids), state, later, facts(ids, later)).messages == ()
    day2 = at("2026-12-02T12:00")
    assert plan(project, audiences(day2, churn=ids), state, day2, facts(ids, day2)).messages == ()  # reentry_after 2d
    day3 = at("2026-12-03T10:30")
    third = plan(project, audiences(day3, churn=ids), state, day3, facts(ids, day3))
    assert sent_to(third) == ids and all(m.key.endswith("/2026-12-03") for m in third.messages)
    assert {e.entries for e in third.enrollments} == {2}


def test_recurring_window_is_the_customers_own(tmp_path):
    project = make_project(tmp_path, RECURRING.replace("CAPS", ""))
    now = at("2026-12-01T10:30")  # 08:30 in Berlin: wait for 10:00 there
    p = plan(project, audiences(now, churn=[1, 2]), StateSnapshot(), now, facts([1, 2], now, {2: {"timezone": "Europe/Berlin"}}))
    assert sent_to(p) == [1]
    assert [(d.customer_id, d.rule, d.until) for d in p.deferred] == [(2, "send_window", datetime(2026, 12, 1, 9, 0, tzinfo=UTC))]


TRIGGERED = """\
  welcome_back:
    kind: triggered
    audience: cart
    trigger: {segment_entry: cart, delay: 30m}
    cascade: cheapest_first
    CAPS
"""


def test_segment_entry_waits_its_delay_then_sends_and_reentry_follows_caps(tmp_path):
    project = make_project(tmp_path, TRIGGERED.replace("CAPS", "caps: {per_customer: 2, reentry_after: 1d}"))
    now = at("2026-12-01T12:00")
    first = plan(project, audiences(now, cart=[1]), StateSnapshot(), now, facts([1], now))
    (entry,) = first.enrollments
    assert (entry.action, entry.entered_at, entry.next_step_at, first.messages) == ("enter", now, now + timedelta(minutes=30), ())

    state = applied(first)
    soon = now + timedelta(minutes=35)
    sent = plan(project, audiences(soon, cart=[1]), state, soon, facts([1], soon))
    assert [(m.customer_id, m.channel) for m in sent.messages] == [(1, "push")]
    assert sent.messages[0].key.endswith("/1/0/20261201T090000Z")
    state = applied(sent, state)
    assert state.enrollments[0].status == "completed"

    # still in the segment: no re-entry before a day has passed, then once more, then never (per_customer: 2)
    assert plan(project, audiences(soon, cart=[1]), state, now + timedelta(hours=5), facts([1], soon)).enrollments == ()
    day2 = now + timedelta(days=1, minutes=1)
    second = plan(project, audiences(day2, cart=[1]), state, day2, facts([1], day2))
    assert [(e.action, e.entries) for e in second.enrollments] == [("enter", 2)]
    state = applied(second, state)
    state = replace(state, enrollments=tuple(replace(e, status="completed") for e in state.enrollments))
    day5 = now + timedelta(days=5)
    assert plan(project, audiences(day5, cart=[1]), state, day5, facts([1], day5)).enrollments == ()


EVENT = """\
  abandoned_cart:
    kind: triggered
    audience: everyone
    trigger: {event: cart_updated, delay: 1h}
    cascade: email_then_sms
"""


def test_abandoned_cart_one_hour_after_the_event_unless_an_order_came(tmp_path):
    project = make_project(tmp_path, EVENT)
    cart_at = at("2026-12-01T12:00")
    events = [dict(customer_id=1, type="cart_updated", ts=cart_at), dict(customer_id=2, type="cart_updated", ts=cart_at)]
    now = cart_at + timedelta(minutes=10)
    first = plan(project, audiences(now, everyone=[1, 2, 3]), StateSnapshot(), now, facts([1, 2, 3], now, events=events))
    assert {i: (e.entered_at, e.next_step_at) for i, e in enrolled(first).items()} == {
        1: (cart_at, cart_at + timedelta(hours=1)), 2: (cart_at, cart_at + timedelta(hours=1))}

    later = cart_at + timedelta(hours=1, minutes=2)
    ordered = {2: {"last_order_at": cart_at + timedelta(minutes=20)}}
    second = plan(project, audiences(later, everyone=[1, 2, 3]), applied(first), later, facts([1, 2, 3], later, ordered, events=events))
    assert sent_to(second) == [1]
    assert (enrolled(second)[2].status, enrolled(second)[2].exit_reason) == ("exited", "unless")
    # the same event does not enrol again
    state = applied(second, applied(first))
    third = plan(project, audiences(later, everyone=[1, 2, 3]), state, later + timedelta(minutes=5), facts([1, 2, 3], later, events=events))
    assert [e.action for e in third.enrollments if e.action == "enter"] == []


def test_a_first_plan_after_the_delay_sends_or_drops_at_entry(tmp_path):
    # No plan ran in the hour after the carts: entry and the due step happen in
    # the same plan, and `unless` and the goal are checked before sending.
    project = make_project(tmp_path, EVENT)
    cart_at = at("2026-12-01T12:00")
    events = [dict(customer_id=i, type="cart_updated", ts=cart_at) for i in (1, 2, 3)]
    now = cart_at + timedelta(hours=2)
    ordered = {2: {"last_order_at": cart_at + timedelta(minutes=20)}, 3: {"last_order_at": cart_at - timedelta(minutes=5)}}
    for one_by_one in (False, True):
        p = plan(project, audiences(now, everyone=[1, 2, 3]), StateSnapshot(), now, facts([1, 2, 3], now, ordered, events=events),
                 one_by_one=one_by_one)
        assert sent_to(p) == [1, 3]
        rows = enrolled(p)
        assert (rows[2].action, rows[2].status, rows[2].exit_reason) == ("enter", "exited", "unless")
        assert [(m.customer_id, m.due_at) for m in p.messages] == [(1, cart_at + timedelta(hours=1)), (3, cart_at + timedelta(hours=1))]


# --------------------------------------------------------------------------- cascades


def test_cascade_advances_after_its_wait_skips_when_opened_and_exits_on_the_goal(tmp_path):
    project = make_project(tmp_path, BROADCAST.replace("CONTROL", "0").replace("message: {channel: email, template: offer_email}", "cascade: email_then_sms"))
    ids = [1, 2, 3]
    now = at("2026-12-01T10:05")
    first = plan(project, audiences(now, everyone=ids), StateSnapshot(), now, facts(ids, now))
    assert [(m.channel, m.step, m.offer) for m in first.messages] == [("email", 0, "ten")] * 3
    assert {e.next_step_at for e in first.enrollments} == {now + timedelta(days=1)}
    state = applied(first, outcomes={first.messages[0].key: frozenset({"delivered", "opened"})})

    early = now + timedelta(hours=23)
    assert plan(project, audiences(early, everyone=ids), state, early, facts(ids, early)).messages == ()

    day2 = now + timedelta(days=1, minutes=1)
    ordered = {3: {"last_order_at": now + timedelta(hours=5)}}
    second = plan(project, audiences(day2, everyone=ids), state, day2, facts(ids, day2, ordered))
    # 1 opened the e-mail: the SMS step is skipped; 3 ordered: the goal exits; 2 gets the better offer by SMS
    assert [(m.customer_id, m.channel, m.step, m.offer) for m in second.messages] == [(2, "sms", 1, "fifteen")]
    rows = enrolled(second)
    assert (rows[1].action, rows[1].status) == ("skip", "completed")
    assert (rows[3].status, rows[3].exit_reason) == ("exited", "goal")
    assert (rows[2].status, rows[2].last_message_key) == ("completed", second.messages[0].key)


def test_cheapest_reachable_channel(tmp_path):
    project = make_project(tmp_path, BROADCAST.replace("CONTROL", "0").replace("message: {channel: email, template: offer_email}", "cascade: cheapest_first"))
    now = at("2026-12-01T10:05")
    overrides = {
        2: {"push_token": None},  # no token: e-mail
        3: {"consents": {"email": True, "sms": True, "push": False}},  # no push consent: e-mail
        4: {"consents": {"email": False, "sms": True, "push": False}},  # neither: held back
    }
    unsubscribed = frozenset({(5, "push")})  # unsubscribed from push: e-mail
    p = plan(project, audiences(now, everyone=[1, 2, 3, 4, 5]), StateSnapshot(unsubscribed=unsubscribed), now,
             facts([1, 2, 3, 4, 5], now, overrides))
    assert [(m.customer_id, m.channel, m.template, m.cost) for m in p.messages] == [
        (1, "push", "offer_push", 0.05), (2, "email", "offer_email", 0.15), (3, "email", "offer_email", 0.15), (5, "email", "offer_email", 0.15)]
    assert [(h.rule, h.count) for h in p.held_back] == [("no_consent", 1)]


def test_a_gone_push_address_moves_the_customer_to_the_next_channel_and_is_named_when_it_holds_them_back(tmp_path):
    """A provider said 2's push token and 3's e-mail address are gone (bounced,
    address_invalid): "cheapest" skips push for 2; 3, with push gone too, is
    held back as address_invalid; 4 unsubscribed from e-mail and lost push."""
    project = make_project(tmp_path, BROADCAST.replace("CONTROL", "0").replace("message: {channel: email, template: offer_email}", "cascade: cheapest_first"))
    now = at("2026-12-01T10:05")
    gone = {(2, "push"): "tok2", (3, "push"): "tok3", (3, "email"): "c3@example.com", (4, "push"): None, (4, "email"): None}
    state = StateSnapshot(unsubscribed=frozenset({(4, "email")}),  # None: a bounce recorded without the address holds whatever it is now
                          address_invalid=frozenset((c, kind, address_fingerprint(address)) for (c, kind), address in gone.items()))
    p = plan(project, audiences(now, everyone=[1, 2, 3, 4]), state, now, facts([1, 2, 3, 4], now))
    assert [(m.customer_id, m.channel) for m in p.messages] == [(1, "push"), (2, "email")]
    assert sorted((h.rule, h.count) for h in p.held_back) == [("address_invalid", 2)]  # the cheapest option's reason: push gone
    assert state.fingerprint() != StateSnapshot(unsubscribed=state.unsubscribed).fingerprint()  # a saved plan goes stale

    # 2 reinstalled the app (a new push token) and 3 gave a new e-mail address: the new addresses are reached.
    renewed = facts([1, 2, 3, 4], now, {2: {"push_token": "tok2-new"}, 3: {"email": "c3.new@example.com"}})
    p = plan(project, audiences(now, everyone=[1, 2, 3, 4]), state, now, renewed)
    assert [(m.customer_id, m.channel) for m in p.messages] == [(1, "push"), (2, "push"), (3, "email")]
    assert sorted((h.rule, h.count) for h in p.held_back) == [("address_invalid", 1)]  # 4: push gone, address unknown


# --------------------------------------------------------------------------- the gate


def test_quiet_hours_defer_to_the_end_of_the_night_in_each_customers_zone(tmp_path):
    project = make_project(tmp_path, BROADCAST.replace("CONTROL", "0").replace("2026-12-01T10:00", "2026-12-01T22:00"))
    now = at("2026-12-01T22:00")  # 19:00 UTC
    zones = {1: {"timezone": None}, 2: {"timezone": "Asia/Vladivostok"}, 3: {"timezone": "Europe/London"}, 4: {"timezone": "America/New_York"}}
    p = plan(project, audiences(now, everyone=[1, 2, 3, 4]), StateSnapshot(), now, facts([1, 2, 3, 4], now, zones))
    assert sent_to(p) == [3, 4]  # 19:00 in London, 14:00 in New York
    assert [(d.customer_id, d.until, d.rule) for d in p.deferred] == [
        (1, datetime(2026, 12, 2, 6, 0, tzinfo=UTC), "quiet_hours"),  # 09:00 in Moscow (project zone)
        (2, datetime(2026, 12, 1, 23, 0, tzinfo=UTC), "quiet_hours"),  # 05:00 in Vladivostok -> 09:00 there
    ]
    rows = enrolled(p)
    assert (rows[2].step, rows[2].next_step_at, rows[2].status) == (0, datetime(2026, 12, 1, 23, 0, tzinfo=UTC), "active")

    # never dropped: at the end of the night it goes, with the same key
    morning = datetime(2026, 12, 1, 23, 1, tzinfo=UTC)
    later = plan(project, audiences(morning, everyone=[1, 2, 3, 4]), applied(p), morning, facts([1, 2, 3, 4], morning, zones))
    assert [(m.customer_id, m.key) for m in later.messages] == [(2, p.deferred[1].key)]


TWO_CAMPAIGNS = """\
  urgent:
    kind: broadcast
    audience: everyone
    schedule: {at: "2026-12-01T10:00"}
    message: {channel: email, template: offer_email}
    priority: 90
  routine:
    kind: broadcast
    audience: everyone
    schedule: {at: "2026-12-01T10:00"}
    message: {channel: sms, template: offer_sms}
    priority: 10
"""


def test_frequency_caps_across_campaigns_higher_priority_wins(tmp_path):
    project = make_project(tmp_path, TWO_CAMPAIGNS, caps="[{channel: any, max: 1, per: 7d}]")
    now = at("2026-12-01T10:05")
    recent = (SentMessage(3, now - timedelta(days=2), "push", "older"), SentMessage(4, now - timedelta(days=8), "push", "older"))
    p = plan(project, audiences(now, everyone=[1, 2, 3, 4]), StateSnapshot(recent_sends=recent), now, facts([1, 2, 3, 4], now))
    assert [(m.campaign, m.customer_id) for m in p.messages] == [("urgent", 1), ("urgent", 2), ("urgent", 4)]
    assert {(h.campaign, h.rule): h.count for h in p.held_back} == {("routine", "frequency_cap"): 4, ("urgent", "frequency_cap"): 1}


def test_inactive_customers_are_suppressed_from_their_last_order_or_sign_up(tmp_path):
    project = make_project(tmp_path, BROADCAST.replace("CONTROL", "0"))
    now = at("2026-12-01T10:05")
    overrides = {
        2: {"last_order_at": now - timedelta(days=400)},
        3: {"last_order_at": None, "first_order_at": None, "created_at": now - timedelta(days=400)},  # never ordered, old account
        4: {"last_order_at": None, "first_order_at": None, "created_at": now - timedelta(days=10)},  # never ordered, new
    }
    p = plan(project, audiences(now, everyone=[1, 2, 3, 4]), StateSnapshot(), now, facts([1, 2, 3, 4], now, overrides))
    assert sent_to(p) == [1, 4]
    assert [(h.rule, h.count) for h in p.held_back] == [("suppressed_inactive", 2)]
    assert p.audiences[0].suppressed == 2


def test_budget_is_enforced_and_reported_with_numbers(tmp_path):
    project = make_project(tmp_path, BROADCAST.replace("CONTROL", "0") + "    budget: 1.2\n")
    now = at("2026-12-01T10:05")
    ids = list(range(1, 11))
    p = plan(project, audiences(now, everyone=ids), StateSnapshot(spend={"promo": 0.3}), now, facts(ids, now))
    assert len(p.messages) == 6  # 0.3 + 6 x 0.15 = 1.2
    (violation,) = p.violations
    assert violation.rule == "budget" and violation.campaign == "promo"
    assert dict(violation.numbers) == pytest.approx({"budget": 1.2, "spent": 0.3, "planned": 0.9, "held_back_messages": 4,
                                                     "held_back_cost": 0.6, "over_by": 0.6})
    assert "against its budget 1.20" in violation.message
    # held back by the budget, the enrollments wait: raising it sends the rest
    assert sum(1 for e in p.enrollments if e.step == 0 and e.status == "active") == 4


def test_monthly_budget_counts_spend_plan_and_forecast(tmp_path):
    project = make_project(tmp_path, BROADCAST.replace("CONTROL", "0"))
    now = at("2026-12-01T10:05")
    p = plan(project, audiences(now, everyone=[1, 2]), StateSnapshot(spend_this_month=999_999.9), now, facts([1, 2], now))
    (violation,) = p.violations
    assert violation.rule == "monthly_budget"
    assert dict(violation.numbers) == pytest.approx({"monthly_budget": 1_000_000, "spent": 999_999.9, "forecast": 0.3, "over_by": 0.2})


# --------------------------------------------------------------------------- versions and changes


def test_editing_a_template_file_changes_the_version_a_description_does_not(tmp_path):
    project = make_project(tmp_path, BROADCAST.replace("CONTROL", "0"))
    version = campaign_versions(project)["promo"][0]
    (tmp_path / "templates/offer.mjml").write_text(MJML.replace("Hi", "Hello"))
    assert campaign_versions(load_project(tmp_path))["promo"][0] != version
    (tmp_path / "templates/offer.mjml").write_text(MJML)
    text = (tmp_path / "campaigns.yaml").read_text().replace("kind: broadcast", "kind: broadcast\n    description: reworded")
    (tmp_path / "campaigns.yaml").write_text(text)
    assert campaign_versions(load_project(tmp_path))["promo"][0] == version


def in_flight_state(project, old: str) -> StateSnapshot:
    """Two customers half-way through version ``old`` of promo's cascade (SMS due now)."""
    definition = campaign_versions(project)["promo"][1]
    rows = tuple(SnapshotEnrollment("promo", i, old, "treatment", None, 1, "active", at("2026-11-30T10:00"), at("2026-12-01T10:00"),
                                    f"promo/{old}/{i}/0/2026-11-30") for i in (1, 2))
    return StateSnapshot(versions={"promo": old, "gone": "0123456789ab"}, definitions={f"promo/{old}": definition},
                         enrollments=rows + (SnapshotEnrollment("gone", 9, "0123456789ab", "treatment", None, 0, "active", at("2026-11-30T10:00"), None),))


@pytest.mark.parametrize("policy", ["continue", "migrate", "stop"])
def test_a_changed_campaign_shows_what_happens_to_enrollments_in_flight(tmp_path, policy):
    campaign = BROADCAST.replace("CONTROL", "0").replace("message: {channel: email, template: offer_email}", "cascade: email_then_sms")
    project = make_project(tmp_path, campaign + f"    on_change: {policy}\n")
    state = in_flight_state(project, "0ld0ld0ld0ld")
    now = at("2026-12-01T12:00")
    p = plan(project, audiences(now, everyone=[]), state, now, facts([1, 2, 9], now))
    changes = {c.name: c for c in p.campaign_changes}
    new = campaign_versions(project)["promo"][0]
    assert (changes["promo"].action, changes["promo"].in_flight, changes["promo"].in_flight_count) == ("change", policy, 2)
    assert (changes["gone"].action, changes["gone"].in_flight, changes["gone"].in_flight_count) == ("remove", "stop", 1)
    assert enrolled(p, "gone")[9].exit_reason == "campaign_removed"
    rows = enrolled(p, "promo")
    if policy == "continue":
        assert {m.key for m in p.messages} == {f"promo/0ld0ld0ld0ld/{i}/1/2026-11-30" for i in (1, 2)}
    elif policy == "migrate":
        assert {(r.action, r.version) for r in rows.values()} == {("migrate", new)}
        assert {m.key for m in p.messages} == {f"promo/{new}/{i}/1/2026-11-30" for i in (1, 2)}
    else:
        assert p.messages == () and {(r.action, r.exit_reason) for r in rows.values()} == {("stop", "campaign_changed")}
    from campaignctl.render import render_text

    text = render_text(p)
    expected = {"continue": "continue in-flight 2 enrollments on the old version", "migrate": "migrate 2 enrollments in flight to the new version",
                "stop": "stop 2 enrollments in flight"}[policy]
    assert f"~ campaign promo (changed 0ld0ld0l -> {new[:8]}: {expected})" in text
    assert "- campaign gone (removed: stop 1 enrollment)" in text


def test_continue_without_the_old_definition_is_a_violation(tmp_path):
    campaign = BROADCAST.replace("CONTROL", "0").replace("message: {channel: email, template: offer_email}", "cascade: email_then_sms")
    project = make_project(tmp_path, campaign)
    state = replace(in_flight_state(project, "0ld0ld0ld0ld"), definitions={})
    now = at("2026-12-01T12:00")
    p = plan(project, audiences(now, everyone=[]), state, now, facts([1, 2], now))
    assert [v.rule for v in p.violations] == ["missing_definition"]


# --------------------------------------------------------------------------- the plan as data


def test_plan_json_round_trips_and_the_fingerprint_ignores_row_order(tmp_path):
    project = make_project(tmp_path, TWO_CAMPAIGNS + BROADCAST.replace("CONTROL", "0.1").replace("2026-12-01T10:00", "2026-12-01T22:00"),
                           caps="[{channel: sms, max: 1, per: 7d}]", holdout=0.05)
    now = at("2026-12-01T22:05")
    ids = list(range(1, 60))
    state = StateSnapshot(recent_sends=(SentMessage(5, now - timedelta(days=1), "sms", "x"),), spend={"promo": 1.0})
    p = plan(project, audiences(now, everyone=ids), state, now, facts(ids, now, {i: {"timezone": "Europe/London"} for i in (5, 6, 7)}))
    assert p.deferred and p.enrollments and p.forecast and p.held_back
    assert Plan.from_json(p.to_json()) == p
    assert Plan.from_json(p.to_json()).to_json() == p.to_json()
    shuffled = replace(state, recent_sends=tuple(reversed(state.recent_sends + (SentMessage(6, now, "email", "y"),))))
    ordered = replace(state, recent_sends=state.recent_sends + (SentMessage(6, now, "email", "y"),))
    assert shuffled.fingerprint() == ordered.fingerprint() != state.fingerprint()
    assert p.state_fingerprint == state.fingerprint()


def test_forecast_counts_the_later_steps_by_day_and_channel(tmp_path):
    project = make_project(tmp_path, BROADCAST.replace("CONTROL", "0").replace("message: {channel: email, template: offer_email}", "cascade: email_then_sms"))
    now = at("2026-12-01T10:05")
    p = plan(project, audiences(now, everyone=[1, 2]), StateSnapshot(), now, facts([1, 2], now))
    cells = {(c.day.isoformat(), c.channel): (c.messages, round(c.cost, 2)) for c in p.forecast}
    assert cells == {("2026-12-01", "email"): (2, 0.3), ("2026-12-02", "sms"): (2, 5.8)}


def test_bulk_draws_equal_the_documented_formula():
    """assignments() (every eligible customer at once) must give exactly what
    assignment() computes for one: docs/plan.md's SplitMix64 draw, bit for bit."""
    import warnings

    from campaignctl.planner.hashing import assignment, assignments

    ids = np.array([0, 1, 7, 42, 10**9 + 7, 2**63 - 1, -5, -(2**63), 123456789012], dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # uint64 wrap-around is the formula, not an overflow to warn about
        bulk = assignments("shop", "winback", ids)
    for customer_id, drawn in zip(ids.tolist(), bulk.tolist()):
        assert drawn == assignment("shop", "winback", customer_id) == offline_assignment("shop", "winback", customer_id)
        assert 0 <= drawn < 1
    assert assignments("shop", "winback", np.empty(0, dtype=np.int64)).shape == (0,)
    with pytest.raises(TypeError, match="customer_id must be an integer"):
        assignment("shop", "winback", "7")


def test_what_the_planner_made_goes_to_the_oldest_generation_and_frozen_objects_stay_frozen():
    from campaignctl.planner.core import _without_cyclic_gc

    with _without_cyclic_gc():
        assert not gc.isenabled()
        made = [object() for _ in range(3)]  # a tracked container, as a plan's columns are
    assert gc.isenabled()
    assert any(found is made for found in gc.get_objects(generation=2))  # not walked by the young generations again
    assert gc.get_freeze_count() == 0
    gc.freeze()  # a process that keeps objects frozen (before a fork, say) keeps them so
    try:
        with _without_cyclic_gc():
            more = [object()]
        assert gc.get_freeze_count() > 0 and not any(found is more for found in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()
