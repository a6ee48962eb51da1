"""plan and apply end to end: the example project on a small demo retailer,
the outbox as the channel, SQLite as state, a simulated clock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from campaignctl.demo_data import generate_demo_data
from campaignctl.executor import StalePlan, apply, make_plan
from campaignctl.project import load_project

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)  # 10:30 in Moscow, when the December broadcasts are due


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("demo") / "data"
    generate_demo_data(data, 3000, seed=11, as_of=NOW + timedelta(days=3))  # data after `now` is ignored until the clock gets there
    return data


@pytest.fixture
def project_dir(tmp_path, demo_data) -> Path:
    root = tmp_path / "project"
    shutil.copytree(ROOT / "campaigns", root, ignore=shutil.ignore_patterns("data", "out", ".campaignctl"))
    (root / "data").symlink_to(demo_data, target_is_directory=True)
    return root


def outbox(root: Path) -> list[dict]:
    lines = []
    for path in sorted((root / "out").glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def ledger(root: Path) -> dict[str, str]:
    import sqlite3

    with sqlite3.connect(root / ".campaignctl" / "state.db") as db:
        return dict(db.execute("SELECT key, status FROM messages"))


def enrollment_groups(root: Path) -> dict[tuple[str, str], str]:
    import sqlite3

    with sqlite3.connect(root / ".campaignctl" / "state.db") as db:
        return {(campaign, customer): group for campaign, customer, group in db.execute("SELECT campaign, customer_id, grp FROM enrollments")}


def test_apply_sends_what_the_plan_showed_exactly_once(project_dir):
    project = load_project(project_dir)
    planned = make_plan(project, NOW)
    assert planned.messages and not planned.violations

    result = apply(project, NOW)
    sent = outbox(project_dir)
    keys = [message["key"] for message in sent]
    assert result.applied and not result.render_failures
    assert sorted(keys) == sorted(m.key for m in planned.messages)  # apply decided nothing plan did not show
    assert len(keys) == len(set(keys))
    assert sorted(key for key, status in ledger(project_dir).items() if status == "sent") == sorted(keys)

    again = apply(project, NOW)  # the scheduler's next tick at the same moment
    assert again.delivery["counts"] == {} and len(outbox(project_dir)) == len(sent)
    assert make_plan(project, NOW).exit_code() == 0  # nothing left to do, and the apply did not make plans look stale


def test_control_and_holdout_members_never_receive_anything(project_dir):
    project = load_project(project_dir)
    apply(project, NOW)
    groups = enrollment_groups(project_dir)
    assert {"treatment", "control", "holdout"} <= set(groups.values())
    for message in outbox(project_dir):
        assert groups[(message["campaign"], message["customer_id"])] == "treatment"


def test_messages_are_rendered_and_addressed(project_dir):
    project = load_project(project_dir)
    apply(project, NOW)
    emails = [m for m in outbox(project_dir) if m["channel"] == "email"]
    assert emails
    sample = emails[0]
    assert "@" in sample["to"]
    assert sample["parts"]["subject"] and "<html" in sample["parts"]["html"] and sample["parts"]["text"].strip()
    assert "{{" not in sample["parts"]["html"]
    assert sample["key"] in sample["parts"]["html"]  # links carry the message key for attribution


def test_apply_compiles_each_template_once_for_its_plan_and_its_messages(project_dir, monkeypatch):
    """apply renders with the renderer its plan compiled the templates in."""
    from campaignctl.templates import MessageRenderer

    compiled = Counter()
    compile_template = MessageRenderer._compile
    monkeypatch.setattr(MessageRenderer, "_compile", lambda self, template: compiled.update([template.name]) or compile_template(self, template))
    project = load_project(project_dir)
    result = apply(project, NOW)
    sent = {message["parts"].get("subject") for message in outbox(project_dir) if message["channel"] == "email"}
    assert result.applied and not result.render_failures and len(sent) > 1
    assert compiled and max(compiled.values()) == 1, compiled.most_common(3)


def test_three_simulated_weeks_move_customers_through_cascades_without_duplicates(project_dir):
    project = load_project(project_dir)
    sent_per_day = []
    for hours in range(0, 21 * 24, 24):
        apply(project, NOW + timedelta(hours=hours))
        sent_per_day.append(len(outbox(project_dir)))
    keys = [m["key"] for m in outbox(project_dir)]
    assert len(keys) == len(set(keys)), "a message was sent twice"
    assert sorted(k for k, status in ledger(project_dir).items() if status == "sent") == sorted(keys)
    steps = Counter(int(key.split("/")[3]) for key in keys)
    assert steps[1] > 0, "no cascade ever reached its second step"
    assert sent_per_day[-1] > sent_per_day[0]


def test_a_saved_plan_is_applied_as_approved_and_refused_when_stale(project_dir):
    project = load_project(project_dir)
    saved = make_plan(project, NOW)
    result = apply(project, NOW, saved=saved)
    assert sorted(m["key"] for m in outbox(project_dir)) == sorted(m.key for m in saved.messages)
    assert result.applied
    with pytest.raises(StalePlan, match="state changed"):
        apply(project, NOW, saved=saved)  # the state moved: the old approval no longer holds


def test_a_saved_plan_is_refused_when_the_project_changed(project_dir):
    saved = make_plan(load_project(project_dir), NOW)
    path = project_dir / "triggers.yaml"
    path.write_text(path.read_text().replace("control: 0.1", "control: 0.2", 1))
    with pytest.raises(StalePlan, match="project changed"):
        apply(load_project(project_dir), NOW, saved=saved)
    assert not (project_dir / "out").exists()


def run_cli(project_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "campaignctl", "-C", str(project_dir), *args], capture_output=True, text=True, env=env)


def test_cli_plan_exit_codes_and_saved_plans(project_dir, tmp_path):
    now = NOW.isoformat()
    first = run_cli(project_dir, "plan", "--now", now, "--detailed-exitcode", "--out", str(tmp_path / "plan.json"))
    assert first.returncode == 2, first.stderr
    assert "Plan: 24 campaigns to add" in first.stdout
    markdown = run_cli(project_dir, "plan", "--now", now, "--format", "md")
    assert markdown.returncode == 0 and "<details>" in markdown.stdout
    applied = run_cli(project_dir, "apply", str(tmp_path / "plan.json"))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Apply complete" in applied.stdout
    stale = run_cli(project_dir, "apply", str(tmp_path / "plan.json"))
    assert stale.returncode == 1 and "state changed since this plan was made" in stale.stderr
    after = run_cli(project_dir, "plan", "--now", now, "--detailed-exitcode")
    assert after.returncode == 0, after.stdout


def test_cli_plan_fails_on_a_policy_violation(project_dir):
    path = project_dir / "campaignctl.yaml"
    text = path.read_text()
    assert "monthly_budget" in text
    lines = [line if "monthly_budget" not in line else line.split(":")[0] + ": 10" for line in text.splitlines()]
    path.write_text("\n".join(lines) + "\n")
    done = run_cli(project_dir, "plan", "--now", NOW.isoformat(), "--detailed-exitcode")
    assert done.returncode == 1
    assert "monthly_budget" in done.stdout
    refused = run_cli(project_dir, "apply", "--now", NOW.isoformat())
    assert refused.returncode == 1 and "not applied" in refused.stdout
    assert not (project_dir / "out").exists()


def test_two_applies_started_together_send_nothing_twice(project_dir):
    args = [sys.executable, "-m", "campaignctl", "-C", str(project_dir), "apply", "--now", NOW.isoformat(), "--format", "json"]
    first, second = (subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2))
    results = [process.communicate(timeout=300) + (process.returncode,) for process in (first, second)]
    keys = [m["key"] for m in outbox(project_dir)]
    assert keys and len(keys) == len(set(keys))
    codes = sorted(code for _, _, code in results)
    errors = " ".join(err for _, err, code in results if code)
    # One sent everything; the other either found the lock taken (exit 1, naming
    # the holder) or ran after it and found nothing left to send.
    assert codes in ([0, 0], [0, 1])
    if codes == [0, 1]:
        assert "held by" in errors


def test_apply_killed_at_random_points_sends_every_planned_message_exactly_once(project_dir):
    """SIGKILL the whole `campaignctl apply` process at random moments (while it
    reads data, plans, writes state, renders or sends), then let a run finish:
    every message the plan showed is in the outbox once, and the ledger agrees."""
    import random
    import signal
    import time

    expected = sorted(m.key for m in make_plan(load_project(project_dir), NOW).messages)
    args = [sys.executable, "-m", "campaignctl", "-C", str(project_dir), "apply", "--now", NOW.isoformat(), "--lock-timeout", "30"]
    rng = random.Random(4242)
    for _ in range(6):
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 4.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = subprocess.run(args, capture_output=True, text=True)
    assert final.returncode == 0, final.stdout + final.stderr
    keys = [m["key"] for m in outbox(project_dir)]
    assert len(keys) == len(set(keys)), "a message was sent twice"
    assert sorted(keys) == expected
    assert sorted(k for k, status in ledger(project_dir).items() if status == "sent") == expected


def test_apply_killed_while_the_scheduler_clock_moves_never_messages_a_customer_twice(project_dir):
    """As under a real scheduler, each rerun has a later `now` (so new entry
    windows and keys): a run killed after writing state must not lead the next
    one to plan the same step for the same customer again."""
    import random
    import signal
    import time

    rng = random.Random(99)
    for tick in range(5):
        now = (NOW + timedelta(minutes=5 * tick)).isoformat()
        args = [sys.executable, "-m", "campaignctl", "-C", str(project_dir), "apply", "--now", now, "--lock-timeout", "30"]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = run_cli(project_dir, "apply", "--now", (NOW + timedelta(minutes=30)).isoformat(), "--lock-timeout", "30")
    assert final.returncode == 0, final.stdout + final.stderr
    sent = outbox(project_dir)
    assert len({m["key"] for m in sent}) == len(sent), "a message was sent twice"
    per_step = Counter((m["campaign"], m["customer_id"], m["key"].split("/")[3]) for m in sent)
    assert max(per_step.values()) == 1, [k for k, n in per_step.items() if n > 1][:5]
    assert sorted(k for k, status in ledger(project_dir).items() if status == "sent") == sorted(m["key"] for m in sent)


def test_reported_outcomes_are_recorded_and_an_unsubscribe_holds_back_later_messages(project_dir, tmp_path):
    project = load_project(project_dir)
    apply(project, NOW)
    later = NOW + timedelta(days=2)
    emailed_now = {m["customer_id"]: m["key"] for m in outbox(project_dir) if m["channel"] == "email"}
    planned_later = {str(m.customer_id) for m in make_plan(project, later).messages if m.channel == "email"}
    customer = sorted(set(emailed_now) & planned_later)[0]  # e-mailed today and due another e-mail in two days

    report = tmp_path / "esp-export.jsonl"
    rows = [
        {"key": emailed_now[customer], "type": "unsubscribed", "at": (NOW + timedelta(hours=1)).isoformat(), "payload": {"via": "list-unsubscribe"}},
        {"key": "no/such/message/0/x", "type": "opened", "at": NOW.isoformat()},
        {"key": emailed_now[customer], "type": "teleported", "at": NOW.isoformat()},
    ]
    report.write_text("".join(json.dumps(row) + "\n" for row in rows) + "{broken\n")
    done = run_cli(project_dir, "outcomes", str(report), "--format", "json")
    result = json.loads(done.stdout)
    assert done.returncode == 1  # invalid rows and unknown keys are reported, the valid one is kept
    assert result["recorded"] == 1 and result["unknown_keys"] == ["no/such/message/0/x"]
    assert [row["line"] for row in result["invalid"]] == [3, 4]
    again = json.loads(run_cli(project_dir, "outcomes", str(report), "--format", "json").stdout)
    assert again["recorded"] == 0 and again["repeated"] == 1  # a replayed export changes nothing

    after = make_plan(load_project(project_dir), later)
    assert customer not in {str(m.customer_id) for m in after.messages if m.channel == "email"}
    assert any(h.rule == "unsubscribed" for h in after.held_back)


def test_apply_settles_messages_left_in_doubt_on_a_channel_with_nothing_due(project_dir):
    """A run killed mid-send leaves its messages ``sending``; the next apply asks
    their channel, even when it sends nothing on that channel itself."""
    from campaignctl.connect import open_state_store
    from campaignctl.state import NewMessage

    project = load_project(project_dir)
    due_channels = {m.channel for m in make_plan(project, NOW).messages}
    idle = sorted(set(project.channels) - due_channels)[0]
    store = open_state_store(project)
    try:
        keys = [f"gone/v1/{c}/0/20261130" for c in (1, 2)]
        store.reserve_messages([NewMessage(key, "gone", key.split("/")[2], idle, 0, 0.0) for key in keys])
        assert store.mark_sending(keys) == keys
    finally:
        store.close()
    (project_dir / "out").mkdir(exist_ok=True)
    handed_over = {"key": keys[0], "campaign": "gone", "customer_id": "1", "channel": idle, "to": "x", "parts": {}, "metadata": {}}
    (project_dir / project.channels[idle].options["path"]).write_text(json.dumps(handed_over) + "\n")  # the first reached the outbox
    result = apply(project, NOW)
    assert result.delivery["in_doubt"] == []
    assert ledger(project_dir)[keys[0]] == "sent" and ledger(project_dir)[keys[1]] == "planned"
