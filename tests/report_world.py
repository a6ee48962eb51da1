"""A retailer whose campaign effect is known: the demo data, state written
through the real SQLite store (enrollments assigned by the planner's own
hashing, sent messages, provider outcomes), and extra orders planted for
treated customers only, so the true uplift is what the test put there."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from campaignctl_sqlite import SqliteStateStore

from campaignctl.demo_data import generate_demo_data
from campaignctl.planner.hashing import arms_of, groups_of
from campaignctl.project import load_project
from campaignctl.state import Enrollment, MessageResult, MessageStatus, NewMessage, Outcome

ENTERED = datetime(2026, 11, 10, 9, 0, tzinfo=timezone.utc)
AS_OF = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class World:
    root: Path
    campaign: str
    treated: np.ndarray
    control: np.ndarray
    planted_per_treated: float  # the true revenue-per-customer difference
    planted_orders: int


def demo_data(path: Path, customers: int = 4000, seed: int = 5) -> Path:
    generate_demo_data(path, customers, seed=seed, as_of=AS_OF)
    return path


# A small project of its own (not the example, which other work keeps changing):
# one campaign with a 10% control and two arms, an e-mail -> SMS cascade, the
# 5% global holdout and an RFM feature for the analytics.
CONFIG = """version: 1
name: report-shop
timezone: Europe/Moscow
currency: RUB
ignore: [data, out, templates]
data_source:
  plugin: duckdb
  options: {path: data}
channels:
  email: {plugin: outbox, kind: email, cost: 0.15, options: {path: out/email.jsonl}}
  sms: {plugin: outbox, kind: sms, cost: 2.9, options: {path: out/sms.jsonl}}
policies:
  global_holdout: 0.05
"""
DOCUMENT = """version: 1
features:
  rfm:
    description: RFM groups
    kind: rfm
    period: {last: 365d}
    recency: {quantiles: 5}
    frequency: {quantiles: 5}
    monetary: {quantiles: 5}
    groups:
      champions: {r: [4, 5], f: [4, 5], m: [4, 5]}
      loyal: {r: [3, 4, 5], f: [4, 5]}
      at_risk: {r: [1, 2], f: [3, 4, 5]}
      hibernating: {r: [1, 2], f: [1, 2]}
    fallback: others
segments:
  everyone:
    description: Every customer
    where: {reachable: sms}
templates:
  hello_email:
    channel: email
    subject: "Hello"
    mjml: templates/hello.mjml
  hello_sms:
    channel: sms
    body: "Hello {{ customer.first_name }}"
cascades:
  email_then_sms:
    description: E-mail, then SMS
    steps:
      - channel: email
        template: hello_email
      - wait: 2d
        if: not_opened
        channel: sms
        template: hello_sms
campaigns:
  spring_sale:
    description: The campaign under test
    kind: broadcast
    audience: everyone
    schedule: {at: "2026-11-10T10:00:00+03:00"}
    cascade: email_then_sms
    control: 0.1
    arms:
      - {name: early, weight: 1}
      - {name: late, weight: 1}
"""
MJML = "<mjml><mj-body><mj-section><mj-column><mj-text>Hello</mj-text></mj-column></mj-section></mj-body></mjml>"
CAMPAIGN = "spring_sale"
ARMS = (("early", 1.0), ("late", 1.0))


def project_copy(tmp: Path, data: Path) -> Path:
    root = tmp / "project"
    (root / "templates").mkdir(parents=True)
    (root / "campaignctl.yaml").write_text(CONFIG)
    (root / "project.yaml").write_text(DOCUMENT)
    (root / "templates" / "hello.mjml").write_text(MJML)
    shutil.copytree(data, root / "data")  # copied: planted orders must not leak into other tests' data
    return root


def build_world(root: Path, campaign: str, *, uplift_probability: float, uplift_amount: float, seed: int = 1,
                arms: tuple[tuple[str, float], ...] = ()) -> World:
    """Enrol every customer in ``campaign`` at ENTERED; send treated ones an
    e-mail (and an SMS to a third); treated customers place an extra order of
    ``uplift_amount`` within three days with ``uplift_probability``."""
    project = load_project(root)
    definition = project.campaigns[campaign]
    ids = pq.read_table(root / "data" / "customers.parquet", columns=["customer_id"]).column("customer_id").to_numpy()
    groups = groups_of(project.name, campaign, ids, holdout=project.policies.global_holdout, control=definition.control)
    treated_mask = groups == "treatment"
    arm_names = np.full(len(ids), None, dtype=object)
    if arms:
        arm_names[treated_mask] = arms_of(project.name, campaign, ids[treated_mask], arms)
    rng = np.random.default_rng(seed)
    # The store stamps rows with its clock: the messages go out at entry, as apply would have sent them.
    store = SqliteStateStore(root / ".campaignctl" / "state.db", clock=lambda: ENTERED + timedelta(minutes=1))
    try:
        store.upsert_enrollments([
            Enrollment(campaign, str(c), "v1", str(g), a, 1, "active", None, ENTERED, None)
            for c, g, a in zip(ids.tolist(), groups.tolist(), arm_names.tolist())
        ])
        messages = []
        for c in ids[treated_mask].tolist():
            messages.append(NewMessage(f"{campaign}/v1/{c}/0/w", campaign, str(c), "email", 0, 0.15))
            if c % 3 == 0:
                messages.append(NewMessage(f"{campaign}/v1/{c}/1/w", campaign, str(c), "sms", 1, 2.9))
        store.reserve_messages(messages)
        keys = store.mark_sending([m.key for m in messages])
        store.finish_messages([MessageResult(k, MessageStatus.SENT, provider_id=f"p-{k}") for k in keys])
        outcomes = [Outcome(m.key, "delivered", ENTERED + timedelta(minutes=5)) for m in messages]
        outcomes += [Outcome(m.key, "opened", ENTERED + timedelta(hours=2)) for m in messages if rng.random() < 0.3]
        store.record_outcomes(outcomes)
    finally:
        store.close()
    treated = ids[treated_mask]
    lucky = treated[rng.random(len(treated)) < uplift_probability]
    _plant_orders(root / "data", lucky, uplift_amount, rng)
    return World(root, campaign, treated, ids[groups == "control"], uplift_probability * uplift_amount, len(lucky))


def _plant_orders(data: Path, customers: np.ndarray, amount: float, rng: np.random.Generator) -> None:
    if not len(customers):
        return
    schema = pq.read_schema(next((data / "orders").glob("*.parquet")))
    n = len(customers)
    seconds = rng.uniform(3600, 3 * 86400, n)
    ts = [ENTERED + timedelta(seconds=float(s)) for s in seconds]
    table = pa.table({
        "order_id": pa.array(900_000_000_000 + np.arange(n), pa.int64()),
        "customer_id": pa.array(customers, pa.int64()),
        "ts": pa.array(ts, schema.field("ts").type),
        "channel": pa.array(["online"] * n),
        "store_id": pa.array([None] * n, pa.int64()),
        "total": pa.array(np.full(n, amount)),
        "discount": pa.array(np.zeros(n)),
        "bonus_spent": pa.array(np.zeros(n)),
        "items": pa.array(np.ones(n, dtype=np.int64)),
        "status": pa.array(["completed"] * n),
        "promo_code": pa.array([None] * n, pa.string()),
    }).cast(schema)
    pq.write_table(table, data / "orders" / "part-planted.parquet")
