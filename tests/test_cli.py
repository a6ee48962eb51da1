"""The foundation commands, end to end through the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from campaignctl import __version__
from campaignctl.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "campaignctl", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_version():
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"campaignctl, version {__version__}"


def test_the_example_project_validates():
    done = run("validate", "-C", "campaigns", "--format", "json", cwd=ROOT)  # -C after the command, as the issue writes it
    report = json.loads(done.stdout)
    assert done.returncode == 0, report["diagnostics"]
    assert report["valid"] and report["error_count"] == 0
    assert report["definitions"]["campaigns"] >= 16


def test_init_scaffolds_a_project_that_validates(tmp_path):
    target = tmp_path / "shop"
    done = run("init", str(target))
    assert done.returncode == 0, done.stderr
    assert (target / "campaignctl.yaml").is_file()
    check = run("validate", str(target))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "is valid" in check.stdout


def test_init_refuses_an_existing_project(tmp_path):
    assert run("init", str(tmp_path / "p")).returncode == 0
    again = run("init", str(tmp_path / "p"))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_schema_export_writes_every_schema(tmp_path):
    result = CliRunner().invoke(cli, ["schema", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.glob("*.json"))
    assert written == sorted(p.name for p in (ROOT / "schemas" / "v1").glob("*.json"))
    assert json.loads((tmp_path / "project.json").read_text())["$schema"].endswith("2020-12/schema")


def test_plugins_lists_built_ins_as_json():
    done = run("plugins", "--format", "json")
    names = {plugin["name"] for plugin in json.loads(done.stdout)["plugins"]}
    assert {"duckdb", "postgres", "spark", "outbox", "sqlite"} <= names


def test_no_color_means_no_escape_codes(tmp_path):
    done = run("validate", str(tmp_path))
    assert done.returncode == 1
    assert "\x1b[" not in done.stdout + done.stderr
    assert "no campaignctl.yaml found" in done.stderr
