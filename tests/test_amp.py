"""AMP for Email: the example project's AMP templates, rendered for real demo
customers, pass the official validator (npm amphtml-validator running the
validator_wasm.js that next@15.5.29 ships, offline; installed by
.ci/tools.sh), and our own checks (campaignctl.amp) agree with it on bad
documents: both pass the good ones, both fail each broken one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import skip_unless_ci

from campaignctl.amp import check_amp
from campaignctl.demo_data import generate_demo_data
from campaignctl.preview import render_preview
from campaignctl.project import load_project

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(os.environ.get("CAMPAIGNCTL_TOOLS_DIR", ROOT / ".ci" / "node"))
NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)
AMP_TEMPLATES = ("cart_email", "game_email")


@pytest.fixture(scope="module")
def validator() -> list[str]:
    cli, validator_js = TOOLS / "node_modules" / ".bin" / "amphtml-validator", TOOLS / "validator_wasm.js"
    if not (cli.exists() and validator_js.exists() and shutil.which("node")):
        skip_unless_ci(f"the AMP validator is not installed in {TOOLS} (run .ci/tools.sh)")
    return [str(cli), "--validator_js", str(validator_js), "--html_format", "AMP4EMAIL", "--format", "json"]


def official(validator: list[str], documents: dict[str, str], tmp_path: Path) -> dict[str, list[str]]:
    """name -> the official validator's error messages (empty: PASS)."""
    paths = []
    for name, html in documents.items():
        path = tmp_path / f"{name}.html"
        path.write_text(html, "utf-8")
        paths.append(str(path))
    done = subprocess.run(validator + paths, capture_output=True, text=True, timeout=120)
    results = json.loads(done.stdout)
    return {Path(path).stem: [e["message"] for e in result["errors"] if e["severity"] == "ERROR"] for path, result in results.items()}


@pytest.fixture(scope="module")
def rendered_amp(tmp_path_factory) -> dict[str, str]:
    """Each AMP template of the example project rendered for a demo customer."""
    root = tmp_path_factory.mktemp("amp") / "project"
    shutil.copytree(ROOT / "campaigns", root, ignore=shutil.ignore_patterns("data", "out", ".campaignctl", "out-plan.json"))
    generate_demo_data(root / "data", 200, seed=5, as_of=NOW + timedelta(days=1))
    project = load_project(root)
    found = {}
    for template in AMP_TEMPLATES:
        campaign, step = next(
            (c.name, i) for c in project.campaigns.values()
            for i, s in enumerate(project.cascades[c.cascade].steps if c.cascade else (c.message,))
            if s is not None and s.template == template
        )
        preview = render_preview(project, campaign, 17, root / "preview" / template, step=step, now=NOW)
        found[template] = preview.files["amp"].read_text("utf-8")
    return found


def test_the_example_amp_templates_pass_the_official_validator_and_ours(validator, rendered_amp, tmp_path):
    assert set(rendered_amp) == set(AMP_TEMPLATES)
    for name, html in rendered_amp.items():
        assert "{{" not in html.replace("{{prize}}", "").replace("{{promo_code}}", "")  # only amp-mustache's own
        assert check_amp(html, name) == [], name
    assert official(validator, rendered_amp, tmp_path) == {name: [] for name in rendered_amp}


def broken_documents(good: str) -> dict[str, str]:
    """One rule broken in each, starting from a valid document."""
    head_end = good.index("</head>")
    body_start = good.index("<div", good.index("<body"))
    return {
        "no_amp_attribute": good.replace("<html ⚡4email", "<html", 1),
        "no_charset": good.replace('<meta charset="utf-8">', "", 1),
        "no_runtime": good.replace('<script async src="https://cdn.ampproject.org/v0.js"></script>', "", 1),
        "no_boilerplate": good.replace("<style amp4email-boilerplate>body{visibility:hidden}</style>", "", 1),
        "plain_script": good[:head_end] + "<script>alert(1)</script>" + good[head_end:],
        "external_stylesheet": good[:head_end] + '<link rel="stylesheet" href="https://example.com/a.css">' + good[head_end:],
        "iframe": good[:body_start] + '<iframe src="https://example.com/"></iframe>' + good[body_start:],
        "img_tag": good[:body_start] + '<img src="https://example.com/a.png" width="10" height="10">' + good[body_start:],
        "form_with_action": good[:body_start] + '<form method="get" action="https://example.com/s"><input name="q"></form>' + good[body_start:],
        "event_handler": good[:body_start] + '<div onclick="alert(1)">x</div>' + good[body_start:],
        "important": good.replace("<style amp-custom>", "<style amp-custom>\n    .x { color: red !important; }", 1),
        "css_too_big": good.replace("<style amp-custom>", "<style amp-custom>\n" + ".c{color:#123456}\n" * 4500, 1),
        "missing_extension_script": good.replace(
            '<script async custom-element="amp-accordion" src="https://cdn.ampproject.org/v0/amp-accordion-0.1.js"></script>', "", 1),
    }


def test_our_checks_and_the_official_validator_agree_on_broken_documents(validator, rendered_amp, tmp_path):
    documents = broken_documents(rendered_amp["cart_email"])
    theirs = official(validator, documents, tmp_path)
    for name, html in documents.items():
        ours = check_amp(html, f"{name}.html")
        assert theirs[name], f"{name}: the official validator passed it"
        assert ours, f"{name}: the official validator found {theirs[name]}, we found nothing"


def test_errors_are_located_at_the_offending_line_of_the_template():
    source = (ROOT / "campaigns/templates/cart.amp.html").read_text()
    assert check_amp(source, "templates/cart.amp.html", source=True) == []  # Jinja URLs wait for rendering
    broken = source.replace("<body>", "<body>\n<iframe src=\"https://example.com\"></iframe>", 1)
    line = broken.splitlines().index('<iframe src="https://example.com"></iframe>') + 1
    found = check_amp(broken, "templates/cart.amp.html", source=True)
    assert [str(d.location) for d in found] == [f"templates/cart.amp.html:{line}:1"] and "iframe" in found[0].message


def test_validate_reports_a_broken_amp_template_with_its_place(tmp_path):
    from campaignctl.project import check_project

    root = tmp_path / "project"
    shutil.copytree(ROOT / "campaigns", root, ignore=shutil.ignore_patterns("data", "out", ".campaignctl", "out-plan.json"))
    path = root / "templates/cart.amp.html"
    path.write_text(path.read_text().replace('<meta charset="utf-8">', '<meta charset="utf-8">\n  <script src="https://evil.example/x.js"></script>', 1))
    found = [str(d) for d in check_project(root).diagnostics if d.subject == "amp"]
    assert len(found) == 1 and found[0].startswith("templates/cart.amp.html:5:3: amp: scripts are not allowed")
