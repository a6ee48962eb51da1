"""Plan-time template check: given the example project on a demo retailer,
when a template uses a field the customers table does not have, the plan
fails naming the template file and the field, and apply sends nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from campaignctl.demo_data import generate_demo_data
from campaignctl.executor import make_plan
from campaignctl.project import load_project

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("demo") / "data"
    generate_demo_data(data, 1500, seed=11, as_of=NOW + timedelta(days=3))
    return data


@pytest.fixture
def project_dir(tmp_path, demo_data) -> Path:
    root = tmp_path / "project"
    shutil.copytree(ROOT / "campaigns", root, ignore=shutil.ignore_patterns("data", "out", ".campaignctl", "out-plan.json"))
    (root / "data").symlink_to(demo_data, target_is_directory=True)
    return root


def insert_into_offer_email(root: Path, jinja: str) -> None:
    path = root / "templates/offer.mjml"
    text = path.read_text()
    assert "</mj-body>" in text
    path.write_text(text.replace("</mj-body>", f"<mj-section><mj-column><mj-text>{jinja}</mj-text></mj-column></mj-section></mj-body>"))


def template_violations(root: Path) -> list[str]:
    return [v.message for v in make_plan(load_project(root), NOW).violations if v.rule == "template"]


def test_the_example_templates_pass_for_the_sampled_customers(project_dir):
    planned = make_plan(load_project(project_dir), NOW)
    assert any(m.template == "offer_email" for m in planned.messages)
    assert [v for v in planned.violations if v.rule == "template"] == []


def test_a_missing_customer_field_fails_the_plan_and_nothing_is_sent(project_dir):
    insert_into_offer_email(project_dir, "{{ customer.no_such_field }}")
    env = {**os.environ, "NO_COLOR": "1"}
    base = [sys.executable, "-m", "campaignctl", "-C", str(project_dir)]
    planned = subprocess.run([*base, "plan", "--now", NOW.isoformat()], capture_output=True, text=True, env=env)
    assert planned.returncode == 1, planned.stdout + planned.stderr
    line = next(line for line in planned.stdout.splitlines() if "no_such_field" in line)
    assert "templates/offer.mjml" in line and "offer_email" in line
    applied = subprocess.run([*base, "apply", "--now", NOW.isoformat()], capture_output=True, text=True, env=env)
    assert applied.returncode == 1 and "not applied" in applied.stdout
    assert not (project_dir / "out").exists()


def test_a_field_in_a_branch_no_sampled_customer_takes_still_fails(project_dir):
    insert_into_offer_email(project_dir, "{% if customer.customer_id == -1 %}{{ customer['favourite_colour'] }}{% endif %}")
    found = template_violations(project_dir)
    assert len(found) == 1 and "favourite_colour" in found[0] and "templates/offer.mjml" in found[0]


def test_a_render_error_for_the_sample_names_the_template_and_the_variable(project_dir):
    insert_into_offer_email(project_dir, "{{ offer.no_such_offer_field }}")
    found = template_violations(project_dir)
    assert len(found) == 1
    assert "offer_email" in found[0] and "templates/offer.mjml" in found[0] and "no_such_offer_field" in found[0]


def test_latest_orders_are_read_for_the_recipients_of_templates_that_show_one(project_dir, demo_data):
    import duckdb

    from campaignctl.connect import open_data_source
    from campaignctl.planner.plan import MessageAction
    from campaignctl.template_check import _sample_data
    from campaignctl.templates import MessageRenderer

    def sample(template: str, customers: range) -> list[MessageAction]:
        return [MessageAction(f"k/{template}/{c}", "c", "v", c, 0, "email", template, None, 0.0, NOW) for c in customers]

    def loaded(root: Path) -> tuple[dict, dict]:
        project = load_project(root)
        source = open_data_source(project)
        try:
            samples = {"offer_email": sample("offer_email", range(1, 40)), "order_confirmation_email": sample("order_confirmation_email", range(40, 80))}
            return _sample_data(project, source, MessageRenderer(project), samples, NOW)
        finally:
            source.close()

    profiles, orders = loaded(project_dir)
    assert set(profiles) == set(range(1, 80))  # every recipient's profile
    latest = dict(duckdb.sql(f"SELECT customer_id, arg_max(order_id, ts) FROM '{demo_data}/orders/*.parquet' "
                             f"WHERE ts <= '{NOW.isoformat()}'::TIMESTAMPTZ GROUP BY 1").fetchall())
    expected = {c: latest[c] for c in range(40, 80) if c in latest}
    assert expected and {c: o["order_id"] for c, o in orders.items()} == expected  # only the confirmation's recipients
    insert_into_offer_email(project_dir, "{% if order %}{{ order.total }}{% endif %}")
    _, orders = loaded(project_dir)
    assert set(orders) == {c for c in range(1, 80) if c in latest}


def test_templates_compiled_ahead_of_the_check_leave_a_broken_one_to_the_check(project_dir):
    from campaignctl.template_check import campaign_templates
    from campaignctl.templates import MessageRenderer, RenderError

    project = load_project(project_dir)
    insert_into_offer_email(project_dir, "{% if customer.first_name %}unclosed")  # broken after the project loaded
    renderer = MessageRenderer(project)
    renderer.prepare(sorted(campaign_templates(project)))  # does not raise: the check reports it
    assert {"offer_email", "welcome_email"} <= campaign_templates(project)
    assert "welcome_email" in renderer._compiled and "offer_email" not in renderer._compiled
    with pytest.raises(RenderError):
        renderer.parts("offer_email")
    query_done = threading.Event()
    query_done.set()
    late = MessageRenderer(project)
    late.prepare(sorted(campaign_templates(project)), query_done)  # the query ended first: the rest compile when used
    assert late._compiled == {} and "html" in late.parts("welcome_email")
    found = [v.message for v in make_plan(project, NOW).violations if v.rule == "template"]
    assert len(found) == 1 and "offer_email" in found[0] and "templates/offer.mjml" in found[0]


def test_apply_reads_latest_orders_only_for_messages_whose_template_shows_one(project_dir, monkeypatch):
    import campaignctl.executor as executor
    from campaignctl.connect import open_data_source
    from campaignctl.planner.plan import MessageAction

    asked = []
    read = executor.load_last_orders
    monkeypatch.setattr(executor, "load_last_orders", lambda project, source, ids, now: asked.append(list(ids)) or read(project, source, ids, now))
    messages = [MessageAction(f"k/{template}/{c}", "c", "v", c, 0, "email", template, None, 0.0, NOW)
                for template, customers in (("offer_email", range(1, 30)), ("order_confirmation_email", range(30, 60))) for c in customers]
    project = load_project(project_dir)
    source = open_data_source(project)
    try:
        due, failures = executor._render(project, source, messages, NOW)
        executor._render(project, source, messages[:29], NOW)
    finally:
        source.close()
    assert asked == [list(range(30, 60))]  # the confirmations' recipients, once; none for the offers alone
    confirmations = [d for d in due if d.message.key.startswith("k/order_confirmation_email/")]
    unsendable = [why for key, why in failures if key.startswith("k/order_confirmation_email/")]
    assert len(confirmations) > 20 and len(confirmations) + len(unsendable) == 30
    assert all("has no email contact" in why for why in unsendable)  # rendering itself never failed


def test_samples_read_only_the_fields_templates_read_and_render_the_same(project_dir):
    from campaignctl.connect import open_data_source
    from campaignctl.executor import load_last_orders, load_profiles, message_context
    from campaignctl.issuing import sample_code
    from campaignctl.template_check import _samples, campaign_templates, fields_read
    from campaignctl.templates import MessageRenderer

    project = load_project(project_dir)
    renderer = MessageRenderer(project)
    fields = fields_read(renderer, sorted(campaign_templates(project)))
    assert fields is not None and "push_token" not in fields and "first_name" in fields
    samples = _samples(make_plan(project, NOW).messages, 5)
    customers = sorted({m.customer_id for sample in samples.values() for m in sample})
    source = open_data_source(project)
    try:
        full, read = load_profiles(project, source, customers), load_profiles(project, source, customers, fields)
        orders = load_last_orders(project, source, customers, NOW)
    finally:
        source.close()
    assert set(read) == set(full) and all(set(read[c]) == {"customer_id"} | (fields & set(full[c])) for c in customers)
    assert len(samples) > 5
    def rendered(name, m, profile):
        return renderer.render(name, message_context(project, m, profile, NOW, orders.get(m.customer_id), promo_code=sample_code(project, m.offer)))

    for name, sample in samples.items():
        for m in sample:
            assert rendered(name, m, read[m.customer_id]) == rendered(name, m, full[m.customer_id])


@pytest.mark.parametrize("jinja, whole", [
    ("{{ customer.loyalty_percent }}", False),  # derived: loyalty_tier is read for it
    ("{% for key in customer %}{{ key }}{% endfor %}", True),
    ("{{ customer | length }}", True),
    ("{{ customer.get('city') }}", True),  # a method, not a field
])
def test_a_template_reading_the_whole_customer_reads_every_field(project_dir, jinja, whole):
    from campaignctl.template_check import fields_read
    from campaignctl.templates import MessageRenderer

    insert_into_offer_email(project_dir, jinja)
    fields = fields_read(MessageRenderer(load_project(project_dir)), ["offer_email"])
    assert (fields is None) == whole
    if not whole:
        assert {"loyalty_percent", "loyalty_tier"} <= fields


def test_apply_reads_the_fields_its_templates_read_and_its_channels_contacts(project_dir):
    import campaignctl.executor as executor
    from campaignctl.connect import open_data_source

    project = load_project(project_dir)
    messages = [m for m in make_plan(project, NOW).messages if project.channels[m.channel].kind == "email"][:30]
    source = open_data_source(project)
    asked, query = [], source.query
    source.query = lambda sql: asked.append(sql) or query(sql)
    try:
        due, _ = executor._render(project, source, messages, NOW)
    finally:
        source.close()
    profile_query = next(sql for sql in asked if "first_name" in sql)
    assert "email" in profile_query and "push_token" not in profile_query and "phone" not in profile_query
    assert due and all("@" in d.message.to for d in due)  # addressed from the contact read
