"""Offer economics: given a small retailer whose every order is written out
here, the history query, the forecast in plan and the DRR gate give exactly
the numbers worked out by hand below, to the kopeck; redemptions are read
from the same orders; on the example project, campaign 7 shows its forecast
per band and a generous band offer fails `plan --detailed-exitcode`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow
import pyarrow.parquet as pq
import pytest

from campaignctl.connect import open_data_source
from campaignctl.executor import applied_offer_forecast, needed_segments
from campaignctl.facts import FACT_COLUMNS, CustomerFacts, facts_from_audiences
from campaignctl.facts import SCHEMA as FACTS_SCHEMA
from campaignctl.offers.history import HistorySpec, load_history, segment_history
from campaignctl.offers.redemptions import redemptions
from campaignctl.offers.terms import buyer_value, money
from campaignctl.planner import Plan, StateSnapshot, plan
from campaignctl.planner.economics import needed_history
from campaignctl.project import load_project
from campaignctl.render import render_markdown, render_text
from campaignctl.segments import evaluate_segments
from campaignctl.segments.evaluate import Audiences
from campaignctl.sms import estimate_sms_templates
from campaignctl.template_check import audience_bodies

UTC = timezone.utc
NOW = datetime(2026, 12, 1, tzinfo=UTC)
DAY = timedelta(days=1)
ROOT = Path(__file__).resolve().parents[1]

PROJECT = """\
version: 1
name: shop
timezone: UTC
currency: RUB
data_source: {plugin: duckdb, options: {path: data}}
channels:
  email: {plugin: outbox, kind: email, cost: 0.15}
  sms: {plugin: outbox, kind: sms, cost: 2.9}
policies:
  global_holdout: 0
  suppress_inactive_days: 365
  drr_limits: {discount: 0.15, bonus: 0.09}
promo_pools:
  ten: {generate: {prefix: TEN}, size: 1000}
"""

DOCUMENTS = """\
version: 1
segments:
  everyone:
    where: {consent: email}
templates:
  offer_email:
    channel: email
    subject: For you
    mjml: templates/offer.mjml
  offer_sms:
    channel: sms
    body: "10% off"
offers:
  ten_percent:
    kind: percent_discount
    percent: 10
    valid: {days: 14}
    promo_codes: {pool: ten}
  thirty_percent:
    kind: percent_discount
    percent: 30
    valid: {days: 14}
  bonus_500:
    kind: bonus_points
    points: 500
    max_share_of_check: 0.2
    valid: {days: 14}
    forecast: {redemption_rate: 0.5}
cascades:
  email_then_sms:
    steps:
      - channel: email
        template: offer_email
      - wait: 1d
        channel: sms
        template: offer_sms
campaigns:
  promo:
    kind: recurring
    audience: everyone
    schedule: {every: daily}
    cascade: email_then_sms
    offer: ten_percent
    forecast: {lookback: 28d}
"""

MJML = "<mjml><mj-body><mj-section><mj-column><mj-text>Hi</mj-text></mj-column></mj-section></mj-body></mjml>\n"

# Every completed order of the shop within the last 28 days, and a few that must not count.
# Windows of 14 days: W0 = (now-14d, now], W1 = (now-28d, now-14d].
ORDERS = [
    # order, customer, age,            total,   items, status,     promo code, bonus spent
    (1, 1, DAY, 1000.00, 2, "completed", "TEN0001", 0),          # W0
    (2, 1, 3 * DAY, 3000.00, 4, "completed", None, 150),         # W0 again: one window
    (3, 2, 20 * DAY, 2500.50, 3, "completed", "TEN0002", 0),     # W1
    (4, 2, 2 * DAY, 9999.00, 9, "returned", "TEN0003", 0),       # returned: not counted
    (5, 2, 40 * DAY, 7777.00, 7, "completed", None, 0),          # before the look-back
    (6, 4, 14 * DAY, 800.00, 1, "completed", "OTHER", 0),        # exactly now-14d: W1
    (7, 4, 27 * DAY, 500.00, 1, "completed", None, 40),          # W1 again
]


def write_orders(data: Path) -> None:
    rows = [{"order_id": o, "customer_id": c, "ts": NOW - age, "channel": "online", "store_id": None, "total": total,
             "discount": 0.0, "bonus_spent": float(bonus), "items": items, "status": status, "promo_code": code}
            for o, c, age, total, items, status, code, bonus in ORDERS]
    data.mkdir(parents=True, exist_ok=True)
    pq.write_table(pyarrow.Table.from_pylist(rows), data / "orders.parquet")


@pytest.fixture
def shop(tmp_path):
    files = {"campaignctl.yaml": PROJECT, "shop.yaml": DOCUMENTS, "templates/offer.mjml": MJML}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    write_orders(tmp_path / "data")
    return tmp_path


def history_of(project, customer_ids=(1, 2, 3, 4)):
    source = open_data_source(project, check=False)  # the shop has only the orders table these queries read
    try:
        return load_history(project, source, sorted(needed_history(project)), list(customer_ids), NOW)
    finally:
        source.close()


def facts(ids, without_phone=()):
    return CustomerFacts.from_rows([
        {"customer_id": i, "email": f"c{i}@example.com", "phone": None if i in without_phone else f"+7900000000{i}",
         "timezone": "UTC", "consents": {"email": True, "sms": True}, "last_order_at": NOW - 30 * DAY}
        for i in ids
    ])


def audiences(ids):
    members = {"everyone": np.array(sorted(ids), dtype=np.int64)}
    return Audiences(members, pyarrow.table({"customer_id": pyarrow.array(sorted(ids), pyarrow.int64())}), len(ids), 0.0, NOW)


def test_the_history_query_counts_windows_orders_and_checks_as_by_hand(shop):
    project = load_project(shop)
    spec = HistorySpec(timedelta(days=28), timedelta(days=14))
    assert needed_history(project) == {spec}  # the campaign's look-back, the offer's 14 valid days
    history = history_of(project)[spec]
    assert history.customer_ids.tolist() == [1, 2, 4]
    assert history.orders.tolist() == [2, 1, 2]
    assert history.revenue.tolist() == [4000.0, 2500.5, 1300.0]
    assert history.windows.tolist() == [1, 1, 1]
    of_three = segment_history(history, np.array([3, 1, 2]))  # 3 never ordered
    assert (of_three.customers, of_three.orders, of_three.windows, of_three.windows_each) == (3, 3, 2, 2)
    assert of_three.conversion == money(2) / money(6)  # 2 windows with an order out of 3 customers x 2 windows
    assert of_three.revenue == money("6500.50") and of_three.items == money(9)


def test_the_forecast_in_plan_matches_the_hand_computation_to_the_kopeck(shop):
    project = load_project(shop)
    result = plan(project, audiences([1, 2, 3]), StateSnapshot(), NOW, facts([1, 2, 3], without_phone=(3,)), history=history_of(project))
    (row,) = result.offer_forecast
    # conversion 2/6; average check 6,500.50 / 3 = 2,166.8333...; 10% of it = 216.68333...
    # reached 3 -> buyers 1.00 -> revenue 2,166.83; incentive 216.68;
    # messages: e-mail to 3 x 0.15 + SMS to the 2 with a phone x 2.90 = 6.25
    assert (row.campaign, row.arm, row.offer, row.audience, row.reached) == ("promo", None, "ten_percent", 3, 3)
    assert (row.lookback_days, row.window_days, row.conversion_from) == (28, 14, "history")
    assert row.conversion == 0.333333
    assert (row.average_check, row.check, row.amount, row.buyers) == (2166.83, 2166.83, 216.68, 1.0)
    assert (row.revenue, row.incentive_cost, row.message_cost, row.cost) == (2166.83, 216.68, 6.25, 222.93)
    assert row.drr == 0.1029  # 222.93 / 2,166.83 = 0.10288...
    assert row.payback == 9.72  # 2,166.83 / 222.93 = 9.7197...
    assert result.violations == ()
    assert Plan.from_json(result.to_json()) == result  # the forecast survives a saved plan
    assert applied_offer_forecast(result)[0]["drr"] == 0.1029  # what apply records in the run summary
    text, markdown = render_text(result), render_markdown(result)
    assert "  promo     ten_percent: 10% off" in text and "10.3%" in text and "₽2,166.83" in text
    assert "**Offer forecast**" in markdown and "| promo | ten_percent: 10% off |" in markdown


def test_the_forecast_audience_leaves_out_the_inactive_and_reaches_only_whom_a_channel_can(shop):
    project = load_project(shop)
    known = facts([1, 2, 3]).table.to_pylist()
    known[2]["last_order_at"] = NOW - 400 * DAY  # 3: inactive past suppress_inactive_days (365)
    state = StateSnapshot(unsubscribed=frozenset({(2, "sms")}))  # 2: e-mail only
    result = plan(project, audiences([1, 2, 3, 5]), state, NOW, CustomerFacts(pyarrow.Table.from_pylist(known, FACTS_SCHEMA)),
                  history=history_of(project, [1, 2, 3, 5]))
    (row,) = result.offer_forecast
    # 1, 2 and 5 (no facts: never suppressed, but no contact reaches them); 1 and 2 reached
    assert (row.audience, row.reached) == (3, 2)
    assert row.message_cost == 3.2  # e-mail to 1 and 2 x 0.15 + SMS to 1 x 2.90


def test_a_generous_offer_is_a_drr_violation_naming_the_numbers(shop):
    text = (shop / "shop.yaml").read_text().replace("    offer: ten_percent\n", "    offer: thirty_percent\n")
    (shop / "shop.yaml").write_text(text.replace("    forecast: {lookback: 28d}\n", "    forecast: {lookback: 28d, conversion: 0.5}\n"))
    project = load_project(shop)
    result = plan(project, audiences([1, 2, 3]), StateSnapshot(), NOW, facts([1, 2, 3], without_phone=(3,)), history=history_of(project))
    (row,) = result.offer_forecast
    # buyers 3 x 0.5 = 1.5; revenue 1.5 x 2,166.8333 = 3,250.25; 30% = 975.075 -> 975.08 (half up); + 6.25
    assert (row.conversion_from, row.revenue, row.incentive_cost, row.cost, row.drr) == ("campaign", 3250.25, 975.08, 981.33, 0.3019)
    (violation,) = result.violations
    assert (violation.rule, violation.campaign) == ("drr", "promo")
    assert "forecast DRR 30.19% is over the discount limit 15.00%" in violation.message
    assert "3 reached x 50.00% conversion x 2,166.83 check" in violation.message
    assert dict(violation.numbers)["limit"] == 0.15 and dict(violation.numbers)["cost"] == 981.33
    assert result.exit_code() == 1


def test_arms_are_forecast_each_with_its_own_offer(shop):
    text = (shop / "shop.yaml").read_text().replace("    offer: ten_percent\n", "    offer: ten_percent\n    arms:\n"
                                                    "      - {name: discount, offer: ten_percent}\n      - {name: bonus, offer: bonus_500}\n")
    (shop / "shop.yaml").write_text(text)
    project = load_project(shop)
    ids = list(range(1, 41))
    result = plan(project, audiences(ids), StateSnapshot(), NOW, facts(ids), history=history_of(project, ids))
    rows = {row.arm: row for row in result.offer_forecast}
    assert set(rows) == {"bonus", "discount"}
    assert rows["bonus"].audience + rows["discount"].audience == 40
    assert (rows["bonus"].limit_kind, rows["bonus"].limit, rows["discount"].limit_kind) == ("bonus", 0.09, "discount")
    # 40 customers, 3 of whom ordered (1: W0; 2: W1; 4: W1): conversion 3 / 80; check 7,800.50 / 5 = 1,560.10
    assert rows["bonus"].conversion == rows["discount"].conversion == 0.0375
    # bonus: 500 points, at most 20% of 1,560.10 = 312.02 per buyer, half of it used
    assert rows["bonus"].amount == 312.02 and rows["bonus"].redemption_rate == 0.5


def test_offer_terms_per_kind():
    check, items = money(1800), money(2)
    assert buyer_value({"kind": "fixed_discount", "amount": 250, "min_check": 2000}, check, items).check == 2000
    basket = buyer_value({"kind": "basket_discount", "tiers": [{"items": 3, "percent": 10}, {"items": 5, "percent": 20}]}, check, items)
    assert (basket.items, basket.check, basket.incentive) == (3, 2700, 270)  # stretched to the first tier at 900 per item
    cashback = buyer_value({"kind": "cashback", "percent": 100, "min_check": 5000, "max_per_customer": 20000, "max_share_of_check": 0.2}, check, items)
    assert (cashback.check, cashback.incentive) == (5000, 1000)
    assert buyer_value({"kind": "gift", "gift": "candle", "cost": 350}, check, items).incentive == 350


def test_redemptions_are_read_from_promo_codes_and_bonus_spent(shop):
    project = load_project(shop)
    source = open_data_source(project, check=False)  # the shop has only the orders table these queries read
    try:
        found = redemptions(project, source, ["ten_percent", "bonus_500"], NOW - 28 * DAY, NOW, customers=[1, 2, 3, 4])
        issued = redemptions(project, source, ["ten_percent"], NOW - 28 * DAY, NOW, codes={"ten_percent": ["TEN0002"]})
    finally:
        source.close()
    ten = found["ten_percent"]
    assert (ten.matched_by, ten.orders, ten.customers, ten.revenue) == ("prefix", 2, 2, 3500.5)  # the returned TEN0003 does not count
    bonus = found["bonus_500"]
    assert (bonus.matched_by, bonus.orders, bonus.bonus_spent, bonus.revenue) == ("bonus_spent", 2, 190.0, 3500.0)
    assert (issued["ten_percent"].matched_by, issued["ten_percent"].orders, issued["ten_percent"].revenue) == ("codes", 1, 2500.5)


# --------------------------------------------------------------------------- the example project


EXAMPLE_NOW = "2026-12-01T07:30:00+00:00"


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    from campaignctl.demo_data import generate_demo_data

    root = tmp_path_factory.mktemp("example") / "project"
    shutil.copytree(ROOT / "campaigns", root, ignore=shutil.ignore_patterns("data", "out", ".campaignctl", "out-plan.json"))
    generate_demo_data(root / "data", 1500, seed=5, as_of=datetime.fromisoformat(EXAMPLE_NOW))
    return root


def cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "campaignctl", "-C", str(project), *args], capture_output=True, text=True)


def test_campaign_7_shows_its_forecast_per_band_and_a_generous_band_fails_the_plan(example, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(example, project)
    done = cli(project, "plan", "--now", EXAMPLE_NOW, "--format", "json", "--detailed-exitcode")
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr
    rows = {row["campaign"]: row for row in json.loads(done.stdout)["offer_forecast"]}
    bands = {"avg_check_below_q1": (2000, 250), "avg_check_q1_median": (3000, 300), "avg_check_median_q3": (4000, 500),
             "avg_check_above_q3": (5000, 600)}
    for campaign, (threshold, amount) in bands.items():
        row = rows[campaign]
        assert (row["threshold"], row["amount"]) == (threshold, amount)
        assert row["audience"] > 0 and row["conversion_from"] == "history"
        assert 0 < row["drr"] <= 0.15 and row["drr"] == round(row["cost"] / row["revenue"], 4)
    text = cli(project, "plan", "--now", EXAMPLE_NOW).stdout
    assert "Offer forecast" in text and "minus_250_from_2000: 250 off from 2,000" in text

    offers = project / "offers.yaml"
    offers.write_text(offers.read_text().replace("    amount: 250\n", "    amount: 1500\n", 1))
    failed = cli(project, "plan", "--now", EXAMPLE_NOW, "--detailed-exitcode")
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr
    reason = next(line for line in failed.stdout.splitlines() if line.strip().startswith("! drr avg_check_below_q1"))
    assert "campaign avg_check_below_q1: forecast DRR" in reason and "over the discount limit 15.00%" in reason
    assert "minus_250_from_2000 '1,500 off from 2,000'" in reason


def test_offer_bands_propose_offers_that_meet_the_target_and_validate(example, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(example, project)
    done = cli(project, "offer", "bands", "avg_check_band", "--target-drr", "0.12", "--now", EXAMPLE_NOW, "--format", "json",
               "--out", str(project / "band_offers.yaml"))
    assert done.returncode == 0, done.stderr
    proposal = json.loads(done.stdout)
    assert [band["band"] for band in proposal["bands"]] == ["below_q1", "q1_median", "median_q3", "above_q3"]
    thresholds = [band["threshold"] for band in proposal["bands"]]
    assert thresholds == sorted(thresholds) and thresholds[0] > 0
    for band in proposal["bands"]:
        assert band["customers"] > 0 and band["amount"] / band["threshold"] <= 0.12
        assert band["average_check"] * 1.25 <= band["threshold"]
        assert band["drr"] == round(band["cost"] / band["revenue"], 4) <= 0.12
    valid = cli(project, "validate")
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "avg_check_band_below_q1" in (project / "band_offers.yaml").read_text()
    text = cli(project, "offer", "bands", "avg_check_band", "--target-drr", "0.12", "--now", EXAMPLE_NOW)
    assert "As offers:" in text.stdout and " off from " in text.stdout
    wrong = cli(project, "offer", "bands", "rfm", "--target-drr", "0.12")
    assert wrong.returncode == 1 and "not a quantile_bands feature" in wrong.stderr and "avg_check_band" in wrong.stderr


class FailingHistory:
    """A data source whose order history query fails; every other query runs."""

    def __init__(self, source):
        self.source = source

    def __getattr__(self, name):
        return getattr(self.source, name)

    def query(self, sql: str):
        if "windows_0_0" in sql:
            raise RuntimeError("the history query failed")
        return self.source.query(sql)


def test_the_history_read_beside_the_planner_gives_the_plan_a_sequential_read_gives(example):
    """compute_plan reads the order history in a background thread while the
    planner runs: its forecast must be the one the planner makes from the
    history read first, and a failing history query must fail the plan."""
    from campaignctl.executor import compute_plan, load_offer_history

    project = load_project(example)
    now = datetime.fromisoformat(EXAMPLE_NOW)
    source = open_data_source(project)
    try:
        overlapped = compute_plan(project, source, StateSnapshot(), now)
        audiences = evaluate_segments(project, source, needed_segments(project), now=now, columns=FACT_COLUMNS)
        ids = np.unique(np.concatenate(list(audiences.members.values())))
        facts = facts_from_audiences(project, source, audiences, ids, now)
        estimates = estimate_sms_templates(project, audience_bodies(project, source, audiences, now, "sms"))
        sequential = plan(project, audiences, StateSnapshot(), now, facts, sms=estimates,
                          history=load_offer_history(project, source, audiences, now))
        with pytest.raises(RuntimeError, match="the history query failed"):
            compute_plan(project, FailingHistory(source), StateSnapshot(), now)
        watched = WatchedThreads(source)
        assert compute_plan(project, watched, StateSnapshot(), now).offer_forecast == overlapped.offer_forecast
    finally:
        source.close()
    assert len(overlapped.offer_forecast) > 5 and overlapped.offer_forecast == sequential.offer_forecast
    assert overlapped.messages == sequential.messages
    # The engine left the planner a core while it read the history, and only then;
    # the threads took 1 ms turns at the GIL meanwhile, and the usual 5 ms after.
    interval = sys.getswitchinterval()
    assert [turns for sql, turns in watched.queries if "windows_0_0" in sql] == [(max(1, watched.threads - 1), 0.001)]
    assert {turns for sql, turns in watched.queries if "windows_0_0" not in sql} == {(watched.threads, interval)}


class WatchedThreads(FailingHistory):
    """A data source that records, for each query, how many threads DuckDB had and the interpreter's switch interval."""

    def __init__(self, source):
        super().__init__(source)
        self.threads = self.now_threads()
        self.queries: list[tuple[str, tuple[int, float]]] = []

    def now_threads(self) -> int:
        return int(self.source.connection.execute("SELECT current_setting('threads')").fetchall()[0][0])

    def query(self, sql: str):
        self.queries.append((sql, (self.now_threads(), sys.getswitchinterval())))
        return self.source.query(sql)


def test_history_read_for_everyone_forecasts_as_the_audiences_own(example, monkeypatch):
    """Past IN_LIST_LIMIT members in an offer audience, load_offer_history reads
    everyone's history instead of the audiences' union: the forecast, summed
    over each audience, must not change."""
    import campaignctl.offers.history as history_module
    from campaignctl.executor import load_offer_history

    project = load_project(example)
    now = datetime.fromisoformat(EXAMPLE_NOW)
    source = open_data_source(project)
    try:
        audiences = evaluate_segments(project, source, needed_segments(project), now=now, columns=FACT_COLUMNS)
        facts = facts_from_audiences(project, source, audiences, np.unique(np.concatenate(list(audiences.members.values()))), now)
        asked = []
        read = history_module.load_history
        monkeypatch.setattr(history_module, "load_history", lambda *args: asked.append(args[3]) or read(*args))
        own = load_offer_history(project, source, audiences, now)
        monkeypatch.setattr(history_module, "IN_LIST_LIMIT", 10)
        everyone = load_offer_history(project, source, audiences, now)
    finally:
        source.close()
    assert len(asked[0]) > 10 and asked[1] is None  # the audiences' union, then everyone
    assert all(len(everyone[spec].customer_ids) >= len(own[spec].customer_ids) for spec in own)
    forecasts = [plan(project, audiences, StateSnapshot(), now, facts, history=history).offer_forecast for history in (own, everyone)]
    assert len(forecasts[0]) > 5 and forecasts[0] == forecasts[1]
