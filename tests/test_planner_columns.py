"""The planner walks the customers entering a campaign a column at a time;
``plan(one_by_one=True)`` walks them one at a time, as it walks rows from state.
On the example project, over three days of demo data with state carried from
plan to plan (so rows in flight, re-entry rules, caps from earlier sends and
spent budgets all come into play), both give the same plan, byte for byte."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from test_apply import NOW, demo_data, project_dir  # noqa: F401 - fixtures
from test_planner import applied

from campaignctl.connect import open_data_source
from campaignctl.executor import needed_segments
from campaignctl.facts import load_customer_facts
from campaignctl.planner import StateSnapshot, plan
from campaignctl.project import load_project
from campaignctl.segments import evaluate_segments

# 10:30 Moscow (broadcasts due), an hour later, 02:00 the next night (quiet
# hours), the next morning, and two days on (cascade steps fall due).
MOMENTS = [NOW, NOW + timedelta(hours=1), NOW + timedelta(hours=16, minutes=30), NOW + timedelta(days=1, hours=2),
           NOW + timedelta(days=2, hours=3)]


@pytest.mark.slow
def test_columns_and_one_by_one_give_the_same_plans(project_dir):  # noqa: F811
    # Budgets small enough to hold messages back, and some customers whom
    # state holds off e-mail or push (each is then a reach class of their own).
    # Promo pools too small for what the plans draw.
    promotions = project_dir / "promotions.yaml"
    promotions.write_text(promotions.read_text().replace("budget: 120000", "budget: 40").replace("budget: 150000", "budget: 3"))
    settings = project_dir / "campaignctl.yaml"
    settings.write_text(settings.read_text().replace("size: 200000", "size: 20").replace("size: 300000", "size: 30"))
    project = load_project(project_dir)
    source = open_data_source(project)
    state = StateSnapshot(unsubscribed=frozenset((i, "email") for i in range(1, 3001, 7)),
                          address_invalid=frozenset((i, "push", None) for i in range(2, 3001, 11)))
    seen: Counter = Counter()
    try:
        for now in MOMENTS:
            audiences = evaluate_segments(project, source, needed_segments(project), now=now)
            ids = sorted({int(i) for members in audiences.members.values() for i in members})
            facts = load_customer_facts(project, source, ids, now)
            columns = plan(project, audiences, state, now, facts)
            one_by_one = plan(project, audiences, state, now, facts, one_by_one=True)
            assert columns.to_json() == one_by_one.to_json(), f"plans differ at {now.isoformat()}"
            seen.update(e.action for e in columns.enrollments)
            seen.update(f"{e.action}:{e.exit_reason}" for e in columns.enrollments if e.status == "exited")
            seen.update(f"held:{h.rule}" for h in columns.held_back)
            seen.update(f"violation:{v.rule}" for v in columns.violations)
            seen["messages"] += len(columns.messages)
            seen["deferred"] += len(columns.deferred)
            state = applied(columns, state)
    finally:
        source.close()
    # The scenario exercised what the two paths must agree on.
    for what in ("enter", "send", "exit", "messages", "deferred", "held:budget", "held:frequency_cap",
                 "held:suppressed_inactive", "held:no_consent", "held:unsubscribed", "held:address_invalid",
                 "violation:promo_pool", "violation:budget"):
        assert seen[what] > 0, (what, seen)
