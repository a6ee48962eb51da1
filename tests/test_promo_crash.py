"""Issuing promo codes under SIGKILL, and the plan gate on pools, with real
processes: a child issuing and exporting in transactions is killed at random
points; `campaignctl apply` on the example project is killed at random
moments; `campaignctl plan` refuses a pool too small for its audience."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from test_apply import NOW as APPLY_NOW  # noqa: F401 - the example's clock, shared with test_apply
from test_apply import demo_data, outbox, project_dir  # noqa: F401 - fixtures
from test_promo_codes import PROJECT, make_project

# Issues `count` customers' offers in transactions of `chunk` messages, each
# with its ledger rows, then exports to the project's CSV sink in batches of
# 40; prints a line after every commit so the parent can kill it mid-way.
CHILD = textwrap.dedent("""
    import sys
    from datetime import datetime, timezone
    from pathlib import Path
    from campaignctl import plugins
    from campaignctl.connect import open_offer_sinks
    from campaignctl.issuing import export_offers, issue_offers
    from campaignctl.model import PluginConfig
    from campaignctl.planner.plan import MessageAction
    from campaignctl.project import load_project
    from campaignctl.state import NewMessage, locked

    root, count, chunk = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    now = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)
    project = load_project(root)
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), root)
    sinks = open_offer_sinks(project)
    offers = ["hello", "printed_ten", "poster"]

    def messages(first, last):
        for n in range(first, last):
            yield MessageAction(f"c/v1/{n}/0/w", "c", "v1", n, 0, "email", "t", offers[n % 3], 0.1, now)
            if n % 10 == 0:
                yield MessageAction(f"b/v1/{n}/0/w", "b", "v1", n, 0, "email", "t", "bonus", 0.1, now)

    with locked(store, "issue", 60):
        for first in range(0, count, chunk):
            batch = list(messages(first, min(count, first + chunk)))
            with store.atomically():
                store.reserve_messages([NewMessage(m.key, m.campaign, str(m.customer_id), m.channel, 0, 0.1) for m in batch])
                issue_offers(store, project, batch, now)
            print("issued", flush=True)
            export_offers(store, sinks, batch_size=40, on_batch=lambda sink, n: print("exported", flush=True))
    print("done", flush=True)
""")
CHILD_ENV = {**os.environ, "CAMPAIGNCTL_LOAD_PLUGINS": "sqlite,offer_file,duckdb,outbox"}
CUSTOMERS = 1500


def start_child(root: Path, chunk: int = 60) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(CUSTOMERS), str(chunk)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV)


def state_rows(root: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(root / ".campaignctl" / "state.db") as db:
        return db.execute(sql).fetchall()


def exported_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as source:
        return list(csv.DictReader(source))


def assert_issued_once_and_exported_as_in_state(root: Path, sink_file: Path) -> dict[str, str | None]:
    issued = {key: (code, pool) for key, code, pool in state_rows(root, "SELECT key, code, pool FROM issued_offers")}
    per_customer = Counter(code for code, pool in issued.values() if pool in ("welcome", "printed"))
    assert per_customer and max(per_customer.values()) == 1, "a code was issued twice"
    holders = {(pool, holder): code for pool, code, holder in state_rows(root, "SELECT pool, code, holder FROM promo_codes")}
    for key, (code, pool) in issued.items():
        if pool in ("welcome", "printed"):
            assert holders[(pool, key)] == code
    rows = exported_rows(sink_file)
    keys = [row["key"] for row in rows]
    assert len(keys) == len(set(keys)), "an offer was exported twice"
    assert {row["key"]: row["code"] or None for row in rows} == {key: code for key, (code, _) in issued.items()}, "export differs from state"
    return {key: code for key, (code, _) in issued.items()}


def test_issuing_killed_at_random_points_issues_every_code_once_and_exports_the_ledger(tmp_path):
    """SIGKILL the issuing child after a random number of commits (issue
    transactions and export batches), 0-3 ms into the next, then let a run
    finish: every (campaign, customer, offer) holds one code, no code has two
    holders, and the exported file equals the state row for row."""
    root = make_project(tmp_path / "p", PROJECT.replace("size: 100", "size: 100000"), printed=600)
    rng = random.Random(7077)
    for _ in range(8):
        child = start_child(root)
        for _ in range(rng.randint(1, 25)):
            line = child.stdout.readline()
            if line not in ("issued\n", "exported\n"):
                out, err = child.communicate(timeout=120)
                pytest.fail(f"the child ended before the kill (exit {child.returncode}): {line}{out}\n{err}")
        time.sleep(rng.uniform(0, 0.003))
        child.send_signal(signal.SIGKILL)
        child.wait()
    final = start_child(root)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0 and out.endswith("done\n"), err
    codes = assert_issued_once_and_exported_as_in_state(root, root / "out" / "offers.csv")
    assert len(codes) == CUSTOMERS + CUSTOMERS // 10
    assert {code for key, code in codes.items() if key.endswith("/poster")} == {"POSTER500"}
    assert sorted(k for (k,) in state_rows(root, "SELECT key FROM messages")) == sorted(
        [f"c/v1/{n}/0/w" for n in range(CUSTOMERS)] + [f"b/v1/{n}/0/w" for n in range(0, CUSTOMERS, 10)])


def run_cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "campaignctl", "-C", str(project), *args], capture_output=True, text=True, env=env)


def test_apply_killed_at_random_moments_sends_each_customer_the_code_state_holds(project_dir):  # noqa: F811
    args = [sys.executable, "-m", "campaignctl", "-C", str(project_dir), "apply", "--now", APPLY_NOW.isoformat(), "--lock-timeout", "30"]
    rng = random.Random(515)
    for _ in range(4):
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = run_cli(project_dir, "apply", "--now", APPLY_NOW.isoformat(), "--lock-timeout", "30", "--format", "json")
    assert final.returncode == 0, final.stdout + final.stderr
    issued = {key: code for key, code, _ in state_rows(project_dir, "SELECT key, code, pool FROM issued_offers")}
    with sqlite3.connect(project_dir / ".campaignctl" / "state.db") as db:
        per_customer = Counter(code for (code,) in db.execute("SELECT code FROM issued_offers WHERE pool != 'mall_weekday'"))
    assert issued and max(per_customer.values()) == 1
    exported = exported_rows(project_dir / "out" / "offers.csv")
    assert len(exported) == len({row["key"] for row in exported}) and {row["key"]: row["code"] or None for row in exported} == issued
    carried = 0
    for message in outbox(project_dir):
        offer = message["metadata"].get("offer")
        code = issued.get(f"{message['campaign']}/{message['customer_id']}/{offer}") if offer else None
        if code:
            carried += 1
            assert code in json.dumps(message["parts"], ensure_ascii=False), message["key"]
    assert carried > 100


def test_plan_fails_when_a_pool_is_smaller_than_its_audience(project_dir):  # noqa: F811
    path = project_dir / "campaignctl.yaml"
    path.write_text(path.read_text().replace("avg_check_250: {generate: {prefix: UY250}, size: 200000}",
                                             "avg_check_250: {generate: {prefix: UY250}, size: 10}"))
    done = run_cli(project_dir, "plan", "--now", APPLY_NOW.isoformat(), "--detailed-exitcode")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "promo pool avg_check_250 has 10 code(s) left but this plan draws" in done.stdout
    assert "give the pool a larger size, or narrow the audience" in done.stdout
    as_json = json.loads(run_cli(project_dir, "plan", "--now", APPLY_NOW.isoformat(), "--format", "json").stdout)
    (violation,) = [v for v in as_json["violations"] if v["rule"] == "promo_pool"]
    assert violation["campaign"] == "avg_check_q1" or violation["numbers"]["left"] == 10.0
    assert violation["numbers"]["needed"] > 10 and violation["numbers"]["short_by"] == violation["numbers"]["needed"] - 10
    refused = run_cli(project_dir, "apply", "--now", APPLY_NOW.isoformat())
    assert refused.returncode == 1 and not (project_dir / "out" / "offers.csv").exists()
