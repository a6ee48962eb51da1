"""Plan renderings: the text plan's change lines and summary, the Markdown PR
comment's blocks, JSON that reads back. Content is asserted, not snapshots."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from types import MappingProxyType

from campaignctl.planner import (
    CampaignAudience,
    CampaignChange,
    Deferral,
    ForecastCell,
    HeldBack,
    MessageAction,
    Plan,
    Violation,
)
from campaignctl.render import render_json, render_markdown, render_text
from campaignctl.render.common import money

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=timezone.utc)


def message(campaign: str, customer_id: int, channel: str, cost: float) -> MessageAction:
    return MessageAction(f"{campaign}/v/{customer_id}/0/2026-12-01", campaign, "v", customer_id, 0, channel, "t", None, cost, NOW)


def sample_plan() -> Plan:
    messages = [message("abandoned_cart", i, "push", 0.05) for i in range(1, 9)]
    messages += [message("winback", i, "sms", 2.9) for i in range(20, 24)]
    return Plan(
        format_version=1, project="uyut-home", currency="RUB", timezone="Europe/Moscow", now=NOW, state_fingerprint="f" * 64,
        campaign_changes=(
            CampaignChange("abandoned_cart", "create", None, "a1b2c3d4e5f6", None, 0, "triggered"),
            CampaignChange("birthday", "create", None, "0a0b0c0d0e0f", None, 0, "recurring"),
            CampaignChange("old_promo", "remove", "1234567890ab", None, "stop", 40),
            CampaignChange("winback", "change", "aaaaaaaaaaaa", "bbbbbbbbbbbb", "continue", 312, "recurring"),
        ),
        audiences=(
            CampaignAudience("abandoned_cart", "abandoned_cart", 1200, 1100, 55, 105, 940, (("at_1h", 470), ("at_90m", 470)), 940, 0),
            CampaignAudience("winback", "churning", 20_000, 18_000, 900, 1700, 15_400, (), 4, 12),
        ),
        messages=tuple(messages),
        deferred=(Deferral("winback/v/30/0/2026-12-01", "winback", 30, "sms", datetime(2026, 12, 1, 6, 0, tzinfo=timezone.utc), "quiet_hours"),),
        held_back=(HeldBack("winback", "frequency_cap", 7), HeldBack("winback", "suppressed_inactive", 12)),
        forecast=(ForecastCell(date(2026, 12, 1), "push", 8, 0.4), ForecastCell(date(2026, 12, 1), "sms", 4, 11.6),
                  ForecastCell(date(2026, 12, 2), "sms", 100, 290.0)),
        violations=(Violation("budget", "winback", "campaign winback needs 310,000.00 against its budget 300,000.00",
                              MappingProxyType({"budget": 300000.0, "over_by": 10000.0})),),
    )


def test_text_plan_has_change_lines_sections_and_the_summary_last():
    text = render_text(sample_plan())
    lines = text.splitlines()
    assert "  + campaign abandoned_cart (new, version a1b2c3d4)" in lines
    assert "  ~ campaign winback (changed aaaaaaaa -> bbbbbbbb: continue in-flight 312 enrollments on the old version)" in lines
    assert "  - campaign old_promo (removed: stop 40 enrollments)" in lines
    assert any("treatment 940 (at_1h 470, at_90m 470)" in line for line in lines)
    assert any(line.split()[:2] == ["sms", "4"] and "₽11.60" in line for line in lines)
    assert "  winback: quiet_hours 1" in lines
    assert "  winback: frequency_cap 7, suppressed_inactive 12" in lines
    assert any(line.startswith("  2026-12-02") and "₽290.00" in line for line in lines)
    assert "  ! budget winback: campaign winback needs 310,000.00 against its budget 300,000.00" in lines
    assert lines[-1] == "Plan: 2 campaigns to add, 1 to change, 1 to remove; 12 messages now (₽12.00); 1 violation."


def test_markdown_comment_has_summary_violations_tables_and_details():
    md = render_markdown(sample_plan())
    assert "**Plan: 2 campaigns to add, 1 to change, 1 to remove; 12 messages now (₽12.00); 1 violation.**" in md
    assert md.index("[!CAUTION]") < md.index("| campaign | change |")  # violations come first
    assert "| **budget** | winback | campaign winback needs 310,000.00 against its budget 300,000.00 |" in md
    assert "| `winback` | ✏️ changed | churning (20,000) | 18,000 | 15,400 | 1,700 | 900 | 4 | sms 4 | ₽11.60 |" in md
    assert "| sms | 4 | ₽11.60 | 104 | ₽301.60 |" in md
    assert "<details><summary>Per-campaign detail</summary>" in md and md.rstrip().count("</details>") == 1
    detail = md[md.index("<details>"):]
    assert "- held back: frequency_cap 7, suppressed_inactive 12" in detail
    assert "| 2026-12-02 | 0 | 100 | ₽290.00 |" in detail


def test_json_rendering_reads_back():
    plan = sample_plan()
    text = render_json(plan)
    assert json.loads(text)["campaign_changes"][0]["name"] == "abandoned_cart"
    assert Plan.from_json(text) == plan


def test_money_uses_the_project_currency():
    assert money(4512.3, "RUB") == "₽4,512.30"
    assert money(-2, "USD") == "-$2.00"
    assert money(1234567.891, "CHF") == "1,234,567.89 CHF"


def test_an_empty_plan_says_so():
    plan = Plan(1, "shop", "EUR", "Europe/Berlin", NOW, "0" * 64)
    assert render_text(plan).splitlines()[-1] == "Plan: 0 campaigns to add, 0 to change, 0 to remove; 0 messages now (€0.00); 0 violations."
    assert plan.exit_code() == 0
