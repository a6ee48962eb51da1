"""`campaignctl report` end to end: a small retailer whose campaign effect is
planted (tests/report_world.py), state in the real SQLite store, orders in
DuckDB over Parquet, the CLI, and the HTML page in headless chromium."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from report_world import ARMS, AS_OF, CAMPAIGN, ENTERED, build_world, demo_data, project_copy

from campaignctl.project import load_project
from campaignctl.report import ReportOptions, render_html, render_text, report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return demo_data(tmp_path_factory.mktemp("report") / "data")


@pytest.fixture(scope="module")
def uplift_world(tmp_path_factory, data):
    root = project_copy(tmp_path_factory.mktemp("uplift"), data)
    return build_world(root, CAMPAIGN, uplift_probability=0.25, uplift_amount=3000, arms=ARMS)


def overall(result):
    return next(e for e in result.experiments if e.arm is None)


def test_the_report_recovers_a_planted_uplift_inside_its_interval(uplift_world):
    result = report(load_project(uplift_world.root), AS_OF)
    e = overall(result)
    assert e.conversion.treated_n == len(uplift_world.treated) and e.conversion.control_n == len(uplift_world.control)
    assert e.primary.ci_low < uplift_world.planted_per_treated < e.primary.ci_high
    assert e.conversion.significant_uplift  # a quarter of the treated bought once more
    assert e.sample_ratio is not None and not e.sample_ratio.mismatch  # the planner's own hashing: a 90/10 split
    assert e.window_complete == 1.0
    assert {x.arm for x in result.experiments} == {None, "early", "late"}


def test_verdicts_are_on_p_values_holm_adjusted_over_the_whole_report(uplift_world):
    from statsmodels.stats.multitest import multipletests

    result = report(load_project(uplift_world.root), AS_OF, ReportOptions(analytics=False))
    family = [c for e in result.experiments for c in (e.primary, e.conversion)]
    assert len(family) == 6  # the campaign and its two arms, revenue and conversion each
    assert [c.p_adjusted for c in family] == pytest.approx(list(multipletests([c.p_value for c in family], method="holm")[1]))
    assert all(c.significant == (c.p_adjusted < 0.05) for c in family)
    assert all(e.revenue.p_adjusted is None for e in result.experiments if e.revenue_cuped is not None)  # no verdict on it
    assert {e.primary.method for e in result.experiments} <= {"permutation", "permutation+cuped"}  # a control of ~200
    text = render_text(result)
    assert "p (Holm)" in text and "over the 6 tests of this report" in text


def test_funnel_and_economics_add_up_to_the_ledger(uplift_world):
    result = report(load_project(uplift_world.root), AS_OF)
    treated = len(uplift_world.treated)
    sms = sum(1 for c in uplift_world.treated.tolist() if c % 3 == 0)
    by_channel = {}
    for row in result.funnel:
        by_channel[row.channel] = by_channel.get(row.channel, 0) + row.sent
        assert row.delivered == row.sent and row.opened <= row.sent
    assert by_channel == {"email": treated, "sms": sms}
    assert sum({(r.arm): r.audience for r in result.funnel}.values()) == treated
    money = result.economics[0]
    assert money.message_cost == pytest.approx(treated * 0.15 + sms * 2.9)
    assert money.most_expensive_channel == "sms"
    assert money.cascade_savings == pytest.approx((treated + sms) * 2.9 - money.message_cost)
    assert money.drr_forecast is None and "no forecast recorded" in render_text(result)
    converted = sum(r.converted for r in result.funnel)
    assert 0 < converted <= overall(result).conversion.treated_mean * treated + 1e-6


def test_drr_is_set_against_the_forecast_apply_recorded(tmp_path, data):
    from campaignctl_sqlite import SqliteStateStore

    world = build_world(project_copy(tmp_path, data), CAMPAIGN, uplift_probability=0.1, uplift_amount=3000)
    store = SqliteStateStore(world.root / ".campaignctl" / "state.db")
    for forecast in ([{"campaign": CAMPAIGN, "arm": "early", "cost": 300.0, "revenue": 5000.0},
                      {"campaign": CAMPAIGN, "arm": "late", "cost": 100.0, "revenue": 5000.0}],  # at launch
                     [{"campaign": CAMPAIGN, "arm": None, "cost": 900.0, "revenue": 1000.0}]):  # a later apply
        store.finish_run(store.begin_run(), "succeeded", {"messages": 0, "offer_forecast": forecast})
    store.close()
    money = report(load_project(world.root), AS_OF, ReportOptions(analytics=False)).economics[0]
    assert money.drr_forecast == pytest.approx(400 / 10000)  # the launch forecast, arms added up
    assert money.drr == pytest.approx(money.message_cost / money.revenue) and money.offer_cost is None


def test_no_effect_reports_no_significant_uplift(tmp_path, data):
    world = build_world(project_copy(tmp_path, data), CAMPAIGN, uplift_probability=0.0, uplift_amount=0)
    e = overall(report(load_project(world.root), AS_OF))
    assert not e.primary.significant_uplift and not e.conversion.significant_uplift
    assert e.primary.ci_low < 0 < e.primary.ci_high


def test_a_broken_split_is_flagged_as_sample_ratio_mismatch(tmp_path, data):
    import sqlite3

    world = build_world(project_copy(tmp_path, data), CAMPAIGN, uplift_probability=0.0, uplift_amount=0)
    with sqlite3.connect(world.root / ".campaignctl" / "state.db") as db:  # lose half the control group
        db.execute("DELETE FROM enrollments WHERE grp = 'control' AND CAST(customer_id AS INTEGER) % 2 = 0")
    result = report(load_project(world.root), AS_OF)
    assert overall(result).sample_ratio.mismatch
    assert "SAMPLE RATIO MISMATCH" in render_text(result)


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "campaignctl", "-C", str(root), "report", "--now", AS_OF.isoformat(), *args],
                          capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, timeout=120)


def test_cli_formats_and_errors(uplift_world, tmp_path):
    as_json = run_cli(uplift_world.root, "--format", "json", "--no-analytics")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["report_format"] == 1 and data["experiments"][0]["campaign"] == CAMPAIGN
    assert data["experiments"][0]["conversion"]["significant"] is True
    assert data["experiments"][0]["conversion"]["p_adjusted"] >= data["experiments"][0]["conversion"]["p_value"]
    markdown = run_cli(uplift_world.root, CAMPAIGN, "--format", "md", "--no-analytics")
    assert markdown.returncode == 0 and "| campaign / arm |" in markdown.stdout
    page = tmp_path / "report.html"
    html = run_cli(uplift_world.root, "--format", "html", "--out", str(page))
    assert html.returncode == 0 and page.read_text().startswith("<!doctype html>")
    unknown = run_cli(uplift_world.root, "no_such_campaign")
    assert unknown.returncode == 1 and "no campaign 'no_such_campaign'" in unknown.stderr
    bad_date = run_cli(uplift_world.root, "--from", "last tuesday")
    assert bad_date.returncode == 2 and "--from" in bad_date.stderr


def test_a_campaign_sent_by_another_system_is_measured_from_an_assignment_file(uplift_world, tmp_path):
    path = tmp_path / "legacy.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["customer_id", "group", "entered_at"])
        writer.writerows([c, "treatment", ENTERED.isoformat()] for c in uplift_world.treated.tolist())
        writer.writerows([c, "control", ENTERED.isoformat()] for c in uplift_world.control.tolist())
    from_file = report(load_project(uplift_world.root), AS_OF,
                       ReportOptions(assignments=path, experiment="legacy", control_share=0.1, analytics=False))
    from_state = report(load_project(uplift_world.root), AS_OF, ReportOptions(analytics=False))
    legacy, ours = overall(from_file), overall(from_state)
    assert legacy.campaign == "legacy" and legacy.revenue.difference == pytest.approx(ours.revenue.difference)
    assert legacy.conversion.p_value == pytest.approx(ours.conversion.p_value)
    missing = tmp_path / "broken.csv"
    missing.write_text("customer,arm\n1,control\n")
    answer = run_cli(uplift_world.root, "--assignments", str(missing))
    assert answer.returncode == 1 and "no column 'customer_id', 'group'" in answer.stderr


def test_the_html_report_renders_in_chromium_without_errors_and_is_self_contained(uplift_world, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from browser import CHROMIUM, browser

    if CHROMIUM is None:
        from conftest import skip_unless_ci

        skip_unless_ci("chromium is not installed (Debian package chromium)")
    page = tmp_path / "report.html"
    html = render_html(report(load_project(uplift_world.root), AS_OF))
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    page.write_text(html)
    with browser(tmp_path / "profile") as started:
        tab = started.new_tab()
        problems = _console_problems(tab, page.as_uri())
        charts = tab.evaluate("document.querySelectorAll('figure svg').length")
        drawn = tab.evaluate("[...document.querySelectorAll('figure svg')].every(s => s.getBoundingClientRect().height > 20)")
        tab.call("Emulation.setDeviceMetricsOverride", width=1280, height=2200, deviceScaleFactor=1, mobile=False)
        shot = tab.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        tab.close()
    assert problems == []
    assert charts >= 5 and drawn
    import base64

    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    (ROOT / "docs" / "report.png").write_bytes(png)


def _console_problems(tab, url: str) -> list[str]:
    """Console errors and failed requests while the page loads (CDP events)."""
    problems: list[str] = []
    tab.call("Runtime.enable")
    tab.call("Log.enable")
    tab.call("Network.enable")
    seen = []
    socket = tab._socket  # Tab.call skips events while waiting for its answer; record them on the way past
    receive = socket.recv

    def recording_recv(*args, **kwargs):
        message = receive(*args, **kwargs)
        seen.append(json.loads(message))
        return message

    socket.recv = recording_recv
    tab.open(url)
    tab.evaluate("new Promise(r => setTimeout(r, 300))")
    socket.recv = receive
    for event in seen:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            problems.append(json.dumps(params.get("args")))
        elif method == "Runtime.exceptionThrown":
            problems.append(json.dumps(params.get("exceptionDetails")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            problems.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent" and not params.get("request", {}).get("url", "").startswith(("file:", "data:", "about:")):
            problems.append(f"network request: {params['request']['url']}")
    return problems
