"""The acceptance test of "The other channels", with real peers only.

Given a small retailer (campaignctl.demo_data) and a cascade push -> e-mail ->
SMS on three real channels: ``fcm`` against a local FCM HTTP v1 endpoint that
verifies its OAuth JWTs, ``smtp`` against aiosmtpd and ``sms_http`` against a
local SMS gateway; when apply runs over a simulated clock (the push, an hour
later the e-mail to those who did not open the push, a day later the SMS to
those who did not click the e-mail), then per channel the messages and cost
the plans showed are exactly what the peers received (SMS: parts x price, the
parts counted from the texts the gateway got), nobody got anything twice, and
the ledger says the same.

Second: a push token FCM answers UNREGISTERED is recorded as a gone address,
and the next plan holds that customer back on push ("address_invalid").
"""

from __future__ import annotations

import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
import yaml
from contract.channel_peers import SmtpPeer, smtp_peer
from contract.push_peers import FcmPeer, fcm_peer
from contract.sms_peers import GATEWAY_TOKEN, Gateway

from campaignctl import sms
from campaignctl.connect import open_state_store
from campaignctl.demo_data import generate_demo_data
from campaignctl.executor import ApplyResult, apply, make_plan
from campaignctl.project import load_project
from campaignctl.state import Outcome

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)  # 10:30 in Moscow
CLOCKS = (NOW, NOW + timedelta(hours=1), NOW + timedelta(days=1, hours=1), NOW + timedelta(days=2))
PRICES = {"push": 0.05, "email": 0.15, "sms": 2.9}  # the SMS price is per part

SEGMENTS = """\
version: 1
segments:
  app_users:
    description: Reachable by push, e-mail and SMS
    where:
      all:
        - {reachable: push}
        - {reachable: email}
        - {reachable: sms}
"""

TEMPLATES = """\
version: 1
templates:
  sale_push:
    channel: push
    title: Распродажа в Уюте
    body: "{{ customer.first_name }}, скидки до 30% на текстиль"
  sale_email:
    channel: email
    subject: "{{ customer.first_name }}, распродажа началась"
    mjml: templates/sale.mjml
  sale_sms:
    channel: sms
    # Cyrillic: UCS-2; with any demo first name 71-134 characters, so always 2 parts
    body: "{{ customer.first_name }}, распродажа в Уюте: скидки до 30% на текстиль и посуду до воскресенья, ждём вас!"
"""

CASCADE = """\
version: 1
cascades:
  push_email_sms:
    description: Push, then e-mail to those who did not open it, then SMS to those who did not click the e-mail
    steps:
      - channel: push
        template: sale_push
      - wait: 1h
        if: not_opened
        channel: email
        template: sale_email
      - wait: 1d
        if: not_clicked
        channel: sms
        template: sale_sms
"""

SALE = """\
  sale:
    kind: broadcast
    audience: app_users
    schedule: {at: "2026-12-01T10:00"}
    cascade: push_email_sms
"""

PUSH_ONLY = """\
  launch:
    kind: broadcast
    audience: app_users
    schedule: {at: "2026-12-01T10:00"}
    message: {channel: push, template: sale_push}
  reminder:
    kind: broadcast
    audience: app_users
    schedule: {at: "2026-12-03T10:00"}
    message: {channel: push, template: sale_push}
"""

MJML = "<mjml><mj-body><mj-section><mj-column><mj-text>{{ customer.first_name }}, скидки до 30%</mj-text></mj-column></mj-section></mj-body></mjml>\n"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("demo") / "data"
    generate_demo_data(data, 1200, seed=11, as_of=NOW + timedelta(days=3))
    return data


class Peers:
    def __init__(self, fcm: FcmPeer, smtp: SmtpPeer, gateway: Gateway):
        self.fcm, self.smtp, self.gateway = fcm, smtp, gateway


@pytest.fixture
def peers() -> Iterator[Peers]:
    gateway = Gateway().start()
    try:
        with fcm_peer() as fcm, smtp_peer() as smtp:
            yield Peers(fcm, smtp, gateway)
    finally:
        gateway.stop()


def write_project(root: Path, data: Path, peers: Peers, campaigns: str) -> Path:
    """A project whose push, email and sms channels are the real plugins pointed at the peers."""
    root.mkdir()
    (root / "data").symlink_to(data, target_is_directory=True)
    channels = {
        "push": {"plugin": "fcm", "kind": "push", "cost": PRICES["push"], "options": peers.fcm.options(root)},
        "email": {"plugin": "smtp", "kind": "email", "cost": PRICES["email"], "options": peers.smtp.options()},
        "sms": {"plugin": "sms_http", "kind": "sms", "cost": PRICES["sms"], "options": {
            "url": peers.gateway.url + "/api/sms", "headers": {"Authorization": f"Bearer {GATEWAY_TOKEN}"},
            "body": {"messages": [{"phone": "{to}", "text": "{text}", "from": "{sender}", "client_ref": "{key}", "parts": "{parts}"}]},
            "sender": "Uyut", "id_path": "result.sms_id", "timeout": 5}},
    }
    project = {
        "version": 1, "name": "uyut-channels", "timezone": "Europe/Moscow", "currency": "RUB", "ignore": ["data", "templates"],
        "data_source": {"plugin": "duckdb", "options": {"path": "data"}},
        "state_store": {"plugin": "sqlite", "options": {"path": ".campaignctl/state.db"}},
        "channels": channels,
        "policies": {"quiet_hours": {"start": "21:00", "end": "09:00"}},
    }
    (root / "campaignctl.yaml").write_text(yaml.safe_dump(project, allow_unicode=True, sort_keys=False))
    (root / "segments.yaml").write_text(SEGMENTS)
    (root / "templates.yaml").write_text(TEMPLATES)
    (root / "cascades.yaml").write_text(CASCADE)
    (root / "campaigns.yaml").write_text("version: 1\ncampaigns:\n" + campaigns)
    (root / "templates").mkdir()
    (root / "templates" / "sale.mjml").write_text(MJML)
    return root


def ledger(root: Path) -> list[tuple[str, str, str, float]]:
    with sqlite3.connect(root / ".campaignctl" / "state.db") as db:
        return list(db.execute("SELECT key, channel, status, cost FROM messages ORDER BY key"))


def record(root: Path, outcomes: list[Outcome]) -> None:
    """What the app and the mail tracking report (serve does this in production)."""
    store = open_state_store(load_project(root))
    try:
        store.record_outcomes(outcomes)
    finally:
        store.close()


def planned_totals(results: list[ApplyResult]) -> dict[str, tuple[int, float]]:
    totals: dict[str, list] = {}
    for result in results:
        for channel, (count, cost) in result.plan.messages_by_channel().items():
            total = totals.setdefault(channel, [0, 0.0])
            total[0] += count
            total[1] += cost
    return {channel: (count, round(cost, 6)) for channel, (count, cost) in sorted(totals.items())}


def test_a_push_email_sms_cascade_costs_what_the_peers_received(tmp_path, demo_data, peers):
    root = write_project(tmp_path / "project", demo_data, peers, SALE)
    project = load_project(root)
    results = [apply(project, NOW)]
    pushed = {m.customer_id: m.key for m in results[0].plan.messages}
    # A few customers open the push: the e-mail step is not for them.
    openers = sorted(pushed)[::10]
    record(root, [Outcome(pushed[c], "opened", NOW + timedelta(minutes=5)) for c in openers])
    results.append(apply(project, CLOCKS[1]))
    emailed = {m.customer_id: m.key for m in results[1].plan.messages}
    clickers = sorted(emailed)[::7]  # and a few click the e-mail: no SMS for them
    record(root, [Outcome(emailed[c], "clicked", CLOCKS[1] + timedelta(minutes=5)) for c in clickers])
    results += [apply(project, clock) for clock in CLOCKS[2:]]

    assert all(r.applied and not r.render_failures for r in results)
    assert [sorted({m.channel for m in r.plan.messages}) for r in results] == [["push"], ["email"], ["sms"], []]
    assert len(pushed) > 50  # enough customers for the numbers to mean something

    # The peers' own records: FCM's accepted message keys, the mails' X-Campaignctl-Key, the gateway's client_ref.
    received = {
        "push": [m["data"]["message_key"] for m in peers.fcm.messages()],
        "email": [mail.key for mail in peers.smtp.received],
        "sms": [s["client_ref"] for s in peers.gateway.accepted],
    }
    for channel, keys in received.items():
        assert len(keys) == len(set(keys)), f"{channel}: a message reached the peer twice"
    sms_parts = [sms.part_count(s["text"]) for s in peers.gateway.accepted]
    assert set(sms_parts) == {2} and [int(s["parts"]) for s in peers.gateway.accepted] == sms_parts
    assert planned_totals(results) == {
        "email": (len(received["email"]), round(len(received["email"]) * PRICES["email"], 6)),
        "push": (len(received["push"]), round(len(received["push"]) * PRICES["push"], 6)),
        "sms": (len(received["sms"]), round(sum(sms_parts) * PRICES["sms"], 6)),
    }

    # Each customer moved through the steps the conditions allowed, once each.
    by_customer = {channel: Counter(key.split("/")[2] for key in keys) for channel, keys in received.items()}
    assert all(n == 1 for counts in by_customer.values() for n in counts.values())
    assert not {str(c) for c in openers} & set(by_customer["email"])
    assert not {str(c) for c in clickers} & set(by_customer["sms"])
    # The SMS goes to everyone who did not click the message before it: the e-mail, or for
    # those whose e-mail step was skipped (they opened the push) the push, which nobody clicked.
    assert set(by_customer["sms"]) == ({str(c) for c in emailed} - {str(c) for c in clickers}) | {str(c) for c in openers}

    # The ledger: every planned message sent once, at the cost the plan showed, and it is what the peers have.
    rows = ledger(root)
    assert {status for _, _, status, _ in rows} == {"sent"}
    assert sorted(key for key, *_ in rows) == sorted(key for keys in received.values() for key in keys)
    for channel, (count, cost) in planned_totals(results).items():
        mine = [row for row in rows if row[1] == channel]
        assert (len(mine), round(sum(row[3] for row in mine), 6)) == (count, cost)

    # The next scheduler tick has nothing left to send.
    assert apply(project, CLOCKS[-1] + timedelta(hours=1)).delivery.get("counts", {}) == {}


def test_a_push_token_fcm_says_is_gone_holds_the_customer_back_on_push_in_later_plans(tmp_path, demo_data, peers):
    root = write_project(tmp_path / "project", demo_data, peers, PUSH_ONLY)
    project = load_project(root)
    first = make_plan(project, NOW)
    launch = sorted(m.customer_id for m in first.messages if m.campaign == "launch")
    uninstalled = launch[:3]
    with duckdb.connect() as db:
        tokens = db.execute(f"SELECT push_token FROM '{demo_data}/customers.parquet' WHERE customer_id IN ({', '.join(map(str, uninstalled))})")
        peers.fcm.gone.update(token for (token,) in tokens.fetchall())
    assert len(peers.fcm.gone) == 3

    result = apply(project, NOW)
    assert result.delivery["counts"]["push"] == {"sent": len(launch) - 3, "failed_permanent": 3}

    later = make_plan(project, NOW + timedelta(days=2, hours=1))  # the reminder is due
    reminded = sorted(m.customer_id for m in later.messages if m.campaign == "reminder")
    held = {(h.campaign, h.rule): h.count for h in later.held_back}
    assert held.get(("reminder", "address_invalid")) == 3
    assert reminded and not set(uninstalled) & set(reminded)  # the others still get their push

    # Two of them install the app again: a new token is a new address, and it is reached.
    renewed = tmp_path / "renewed"
    shutil.copytree(demo_data, renewed)
    back = ", ".join(map(str, uninstalled[:2]))
    with duckdb.connect() as db:
        db.execute(f"COPY (SELECT * REPLACE (CASE WHEN customer_id IN ({back}) THEN 'reinstalled-' || customer_id ELSE push_token END AS push_token)"
                   f" FROM '{demo_data}/customers.parquet') TO '{renewed}/customers.parquet' (FORMAT parquet)")
    (root / "data").unlink()
    (root / "data").symlink_to(renewed, target_is_directory=True)
    again = make_plan(load_project(root), NOW + timedelta(days=2, hours=1))
    assert {(h.campaign, h.rule): h.count for h in again.held_back}.get(("reminder", "address_invalid")) == 1
    reminded_again = {m.customer_id for m in again.messages if m.campaign == "reminder"}
    assert set(uninstalled[:2]) <= reminded_again and uninstalled[2] not in reminded_again
