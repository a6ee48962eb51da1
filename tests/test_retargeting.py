"""Retargeting export: hashes checked against the answers the ad networks
publish, and the export of the example project on a demo retailer checked
against an independent DuckDB query of the same Parquet files."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from campaignctl.retargeting import hash_contact, normalise_email, normalise_phone, write_export

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)

# Published examples: TikTok's customer-file help ("janedoe@gmail.com", and the
# phone 374-93-828222 hashed as digits with the country code, as Meta takes it)
# and X's audience docs (the lowercase hex digest).
JANEDOE_SHA256 = "d6117306485ed0e50afab3ac871e98f81699151f30281527d63ff5f233656c69"
ARMENIAN_PHONE_DIGITS_SHA256 = "65b7e6dcf6f4310f8d7cbfbd78289a753062fb054d6664fb9aaac5df66a422d4"


def test_email_is_trimmed_and_lowercased_before_hashing():
    assert hash_contact("  JaneDoe@Gmail.COM \n", None).email == JANEDOE_SHA256
    assert normalise_email("jane.doe+shop@gmail.com") == "jane.doe+shop@gmail.com"  # no network documents dot/plus rules for lists
    assert normalise_email("not an address") is None


def test_phone_hashes_as_e164_for_google_and_as_digits_for_meta():
    contact = hash_contact(None, "+374 (93) 82-82-22")
    assert contact.phone_digits == ARMENIAN_PHONE_DIGITS_SHA256
    assert contact.phone_e164 == hashlib.sha256(b"+37493828222").hexdigest()
    assert normalise_phone("0037493828222") == "+37493828222"


@pytest.mark.parametrize("raw", ["89161234567", "916-123-45-67", "+7 916 CALL ME", "+123", "", None])
def test_a_phone_whose_country_is_unknown_is_skipped_not_guessed(raw):
    assert normalise_phone(raw) is None


def test_each_format_has_the_networks_headers_and_only_hashes(tmp_path):
    rows = [{"email": "JaneDoe@gmail.com", "phone": "+37493828222"}, {"email": None, "phone": "8 916 123 45 67"}, {"email": None, "phone": None}]
    google = write_export(rows, tmp_path / "g.csv", "google", "test")
    assert (google.customers, google.exported, google.emails, google.phones, google.phones_skipped) == (3, 1, 1, 1, 1)
    assert (tmp_path / "g.csv").read_text() == f"Email,Phone\n{JANEDOE_SHA256},{hashlib.sha256(b'+37493828222').hexdigest()}\n"
    write_export(rows, tmp_path / "m.csv", "meta", "test")
    assert (tmp_path / "m.csv").read_text() == f"email,phone\n{JANEDOE_SHA256},{ARMENIAN_PHONE_DIGITS_SHA256}\n"
    write_export(rows, tmp_path / "h.txt", "hashes", "test")
    assert (tmp_path / "h.txt").read_text().split() == [JANEDOE_SHA256, hashlib.sha256(b"+37493828222").hexdigest()]
    assert oct((tmp_path / "g.csv").stat().st_mode & 0o777) == "0o600"


# --------------------------------------------------------------------------- on demo data


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory) -> Path:
    from campaignctl.demo_data import generate_demo_data

    root = tmp_path_factory.mktemp("retargeting") / "project"
    shutil.copytree(ROOT / "campaigns", root, ignore=shutil.ignore_patterns("data", "out", ".campaignctl"))
    generate_demo_data(root / "data", 3000, seed=5, as_of=NOW)
    return root


def export(project_dir: Path, *args: str) -> dict:
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "campaignctl", "-C", str(project_dir), "audience", "export", *args,
                           "--now", NOW.isoformat(), "--report", "json"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def unreachable_contacts(data: Path) -> list[tuple[str | None, str | None]]:
    """Independently of campaignctl: customers for whom no consent kind has a
    granted latest consent and the contact it needs."""
    return duckdb.sql(f"""
        WITH latest AS (
            SELECT customer_id, channel, arg_max(status, (updated_at, CASE status WHEN 'granted' THEN 0 ELSE 1 END)) AS status
            FROM '{data}/consents.parquet' WHERE updated_at <= TIMESTAMPTZ '{NOW.isoformat()}' GROUP BY ALL),
        reachable AS (
            SELECT DISTINCT c.customer_id FROM '{data}/customers.parquet' c JOIN latest l USING (customer_id)
            WHERE l.status = 'granted' AND CASE l.channel
                WHEN 'email' THEN c.email WHEN 'sms' THEN c.phone WHEN 'whatsapp' THEN c.phone WHEN 'telegram' THEN c.phone
                WHEN 'push' THEN c.push_token WHEN 'web_push' THEN c.web_push_endpoint END IS NOT NULL)
        SELECT email, phone FROM '{data}/customers.parquet' WHERE customer_id NOT IN (SELECT customer_id FROM reachable)
    """).fetchall()


def test_unreachable_customers_are_exported_hashed_and_match_an_independent_query(project_dir, tmp_path):
    report = export(project_dir, "--unreachable", "--format", "google", "--out", str(tmp_path / "ads.csv"))
    expected = unreachable_contacts(project_dir / "data")
    assert report["customers"] == len(expected) > 0
    with (tmp_path / "ads.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert set(rows[0]) == {"Email", "Phone"}
    want = {(hashlib.sha256(e.lower().encode()).hexdigest() if e else "", hashlib.sha256(p.encode()).hexdigest() if p else "")
            for e, p in expected if e or p}
    assert {(row["Email"], row["Phone"]) for row in rows} == want
    text = (tmp_path / "ads.csv").read_text()
    assert "@" not in text and "+7" not in text  # never a raw contact


def test_the_example_retargeting_segment_is_a_subset_of_the_unreachable(project_dir, tmp_path):
    segment = export(project_dir, "no_contact_retargeting", "--format", "hashes", "--out", str(tmp_path / "seg.txt"))
    everyone = export(project_dir, "--unreachable", "--format", "hashes", "--out", str(tmp_path / "all.txt"))
    assert 0 < segment["customers"] < everyone["customers"]  # the segment also asks for a purchase in the last year
    assert set((tmp_path / "seg.txt").read_text().split()) < set((tmp_path / "all.txt").read_text().split())


def test_export_refuses_an_unknown_segment_and_a_missing_choice(project_dir, tmp_path):
    env = {**os.environ, "NO_COLOR": "1"}
    for args in (["no_such_segment"], [], ["welcome", "--unreachable"]):
        done = subprocess.run([sys.executable, "-m", "campaignctl", "-C", str(project_dir), "audience", "export", *args,
                               "--out", str(tmp_path / "x.csv")], capture_output=True, text=True, env=env)
        assert done.returncode == 1 and "error" in done.stderr and not (tmp_path / "x.csv").exists()
