"""SMS parts in the plan: an sms channel's cost is per part, so the plan charges
parts x cost per message, shows parts and cost per SMS template, and refuses a
template whose rendered text needs more parts than its max_parts."""

from __future__ import annotations

from pathlib import Path

from test_planner import BASE, BROADCAST, MJML, PROJECT, at, audiences, facts

from campaignctl import sms
from campaignctl.planner import Plan, StateSnapshot, plan
from campaignctl.project import load_project
from campaignctl.render import render_markdown, render_text

SMS_BROADCAST = BROADCAST.replace("CONTROL", "0").replace("message: {channel: email, template: offer_email}",
                                                          "message: {channel: sms, template: offer_sms}")


def sms_project(root: Path, max_parts: int | None = None):
    base = BASE.replace('channel: sms\n    body: "{{ customer.first_name }}, 10% off"',
                        'channel: sms\n    body: "{{ customer.first_name }}, 10% off"' + (f"\n    max_parts: {max_parts}" if max_parts else ""))
    files = {"campaignctl.yaml": PROJECT.replace("HOLDOUT", "0").replace("CAPS", "[]"), "base.yaml": base,
             "campaigns.yaml": "version: 1\ncampaigns:\n" + SMS_BROADCAST, "templates/offer.mjml": MJML}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return load_project(root)


# Rendered for two sample customers: a Latin name keeps the text GSM-7 (1 part);
# a Cyrillic one makes it UCS-2, 150 code units: 3 parts.
SAMPLES = {"offer_sms": ["Ann, 10% off", "Анна, скидка 10% на весь ассортимент до воскресенья. " * 3]}


def test_an_sms_costs_parts_times_the_channel_cost_and_the_plan_shows_it(tmp_path):
    project = sms_project(tmp_path)
    now = at("2026-12-01T10:05")
    estimates = sms.estimate_sms_templates(project, SAMPLES)
    assert [(e.template, e.parts, e.encoding) for e in estimates] == [("offer_sms", 3, sms.UCS2)]

    p = plan(project, audiences(now, everyone=[1, 2]), StateSnapshot(), now, facts([1, 2], now), sms=estimates)
    assert [(m.channel, m.cost) for m in p.messages] == [("sms", 8.7), ("sms", 8.7)]  # 3 parts x 2.9
    assert p.messages_cost == 17.4 and p.violations == ()
    assert "offer_sms: 3 part(s), ucs2; 2 now, ₽17.40" in render_text(p)
    assert "| `offer_sms` | 3 | ucs2 | — | 2 | ₽17.40 |" in render_markdown(p)
    assert Plan.from_json(p.to_json()) == p  # a saved plan keeps the parts

    one_part = plan(project, audiences(now, everyone=[1, 2]), StateSnapshot(), now, facts([1, 2], now))
    assert [m.cost for m in one_part.messages] == [2.9, 2.9] and one_part.sms_templates == ()


def test_an_sms_template_over_its_max_parts_is_a_violation(tmp_path):
    project = sms_project(tmp_path, max_parts=2)
    now = at("2026-12-01T10:05")
    p = plan(project, audiences(now, everyone=[1]), StateSnapshot(), now, facts([1], now),
             sms=sms.estimate_sms_templates(project, SAMPLES))
    [violation] = p.violations
    assert (violation.rule, violation.campaign, dict(violation.numbers)) == ("sms_parts", "promo", {"parts": 3.0, "max_parts": 2.0})
    assert "template offer_sms: the SMS is 3 parts (159 UTF-16 code units, ucs2), over the limit of 2" in violation.message
    assert "max_parts" in violation.message and p.exit_code() == 1
    assert "! sms_parts promo: template offer_sms" in render_text(p)

    fits = plan(project, audiences(now, everyone=[1]), StateSnapshot(), now, facts([1], now),
                sms=sms.estimate_sms_templates(project, {"offer_sms": ["Ann, 10% off"]}))
    assert fits.violations == () and [m.cost for m in fits.messages] == [2.9]
