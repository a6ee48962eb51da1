"""`campaignctl render`: one campaign step rendered for one demo customer into
files, and photographed by Debian's headless Chromium at desktop and mobile
widths (real PNGs, checked for size and content, never a mock browser)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import skip_unless_ci

from campaignctl.connect import open_data_source
from campaignctl.demo_data import generate_demo_data
from campaignctl.executor import load_profiles
from campaignctl.preview import SCREEN_WIDTHS, PreviewError, chromium
from campaignctl.project import load_project

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)
CUSTOMER = 17


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preview") / "project"
    shutil.copytree(ROOT / "campaigns", root, ignore=shutil.ignore_patterns("data", "out", ".campaignctl", "out-plan.json"))
    generate_demo_data(root / "data", 200, seed=3, as_of=NOW + timedelta(days=1))
    return root


def render(project_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    command = [sys.executable, "-m", "campaignctl", "-C", str(project_dir), "render", *args, "--now", NOW.isoformat()]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def first_name(project_dir: Path, customer_id: int) -> str:
    project = load_project(project_dir)
    source = open_data_source(project)
    try:
        return load_profiles(project, source, [customer_id])[customer_id]["first_name"]
    finally:
        source.close()


def png_facts(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the image data): a blank page
    filters to a handful of values, rendered text and colour to many."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    idat, at = b"", 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"IDAT":
            idat += data[at + 8:at + 8 + length]
        at += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def test_render_writes_each_part_for_the_customer(project_dir, tmp_path):
    out = tmp_path / "winback"
    done = render(project_dir, "churn_winback", "--customer", str(CUSTOMER), "--out", str(out), "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["template"] == "winback_email" and report["channel"] == "email"
    assert {Path(p).name for p in report["files"].values()} == {"subject.txt", "preheader.txt", "index.html", "text.txt"}
    name = first_name(project_dir, CUSTOMER)
    assert name in (out / "subject.txt").read_text() and name in (out / "index.html").read_text()
    assert "{{" not in (out / "index.html").read_text() and (out / "text.txt").read_text().strip()


def test_render_writes_the_amp_part_of_a_template_that_has_one(project_dir, tmp_path):
    out = tmp_path / "cart"
    done = render(project_dir, "abandoned_cart", "--customer", str(CUSTOMER), "--step", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    amp = (out / "amp.html").read_text()
    assert amp.startswith("<!doctype html>") and "⚡4email" in amp and first_name(project_dir, CUSTOMER) in amp


def test_render_explains_bad_arguments(project_dir, tmp_path):
    unknown = render(project_dir, "churn_winbak", "--customer", "1", "--out", str(tmp_path / "x"))
    assert unknown.returncode == 1 and "did you mean 'churn_winback'" in unknown.stderr
    nobody = render(project_dir, "churn_winback", "--customer", "99999999", "--out", str(tmp_path / "x"))
    assert nobody.returncode == 1 and "customer 99999999 is not in the customers table" in nobody.stderr
    too_far = render(project_dir, "churn_winback", "--customer", "1", "--step", "9", "--out", str(tmp_path / "x"))
    assert too_far.returncode == 1 and "--step takes 0 to" in too_far.stderr
    assert not (tmp_path / "x").exists()


def test_screenshots_are_real_pngs_at_desktop_and_mobile_width(project_dir, tmp_path):
    try:
        chromium()
    except PreviewError as exc:
        skip_unless_ci(str(exc))
    out = tmp_path / "shots"
    done = render(project_dir, "churn_winback", "--customer", str(CUSTOMER), "--out", str(out), "--screenshot")
    assert done.returncode == 0, done.stderr
    for name, (width, height) in SCREEN_WIDTHS.items():
        shot_width, shot_height, distinct = png_facts(out / f"{name}.png")
        assert (shot_width, shot_height) == (width, height)
        assert distinct > 20, f"{name}.png looks blank"
