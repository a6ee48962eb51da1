"""Broken projects: each gives the expected located message, all errors come
in one run, and the CLI exits 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from campaignctl.cli import cli
from campaignctl.project import check_project

PROJECT = """\
version: 1
name: shop
timezone: Europe/Moscow
currency: RUB
data_source:
  plugin: duckdb
  options: {path: data}
channels:
  email: {plugin: outbox, kind: email, cost: 0.15}
  sms: {plugin: outbox, kind: sms, cost: 2.9}
"""

SEGMENTS = """\
version: 1
segments:
  buyers:
    where:
      orders: {metric: count, gte: 1}
  lapsed:
    where:
      all:
        - segment: buyers
        - orders: {metric: days_since_last, gt: 180}
"""

TEMPLATES = """\
version: 1
templates:
  winback_email:
    channel: email
    subject: "{{ customer.first_name }}, we miss you"
    mjml: templates/winback.mjml
  winback_sms:
    channel: sms
    body: "{{ customer.first_name }}, 300 off: {{ offer.promo_code }}"
"""

CASCADES = """\
version: 1
cascades:
  cheap_first:
    steps:
      - channel: email
        template: winback_email
      - wait: 1d
        if: not_opened
        channel: sms
        template: winback_sms
"""

WINBACK = """\
version: 1
offers:
  minus_300:
    kind: fixed_discount
    amount: 300
    min_check: 3000
campaigns:
  winback:
    kind: broadcast
    audience: lapsed
    schedule: {at: "2026-12-01T10:00"}
    cascade: cheap_first
    offer: minus_300
    control: 0.1
"""

MJML = "<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ customer.first_name }}</mj-text></mj-column></mj-section></mj-body></mjml>\n"


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    files = {
        "campaignctl.yaml": PROJECT,
        "segments.yaml": SEGMENTS,
        "templates.yaml": TEMPLATES,
        "cascades.yaml": CASCADES,
        "campaigns/winback.yaml": WINBACK,
        "templates/winback.mjml": MJML,
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)  # messages show paths relative to where the user stands
    return tmp_path


def edit(root: Path, name: str, old: str, new: str) -> None:
    path = root / name
    text = path.read_text()
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, 1))


def problems(root: Path) -> list[str]:
    return [str(d) for d in check_project(root).diagnostics]


def test_the_base_project_is_valid(project):
    result = check_project(project)
    assert [str(d) for d in result.diagnostics] == []
    assert set(result.project.campaigns) == {"winback"}


def test_dangling_reference_with_suggestion(project):
    edit(project, "campaigns/winback.yaml", "cascade: cheap_first", "cascade: cheep_first")
    assert problems(project) == ["campaigns/winback.yaml:12:14: cascade: unknown cascade 'cheep_first' (did you mean 'cheap_first'?)"]


def test_unknown_key_with_suggestion(project):
    edit(project, "campaigns/winback.yaml", "control: 0.1", "contrl: 0.1")
    assert problems(project) == ["campaigns/winback.yaml:14:5: winback: unknown key 'contrl' (did you mean 'control'?)"]


def test_wrong_type(project):
    edit(project, "campaigns/winback.yaml", "control: 0.1", "control: ten percent")
    assert problems(project) == ["campaigns/winback.yaml:14:14: control: expected a number, got 'ten percent'"]


def test_a_project_section_of_the_wrong_type_is_reported_not_raised(project):
    # Found by the fuzz test: references into `channels: 1` raised AttributeError.
    edit(project, "campaignctl.yaml", "channels:\n  email: {plugin: outbox, kind: email, cost: 0.15}\n  sms: {plugin: outbox, kind: sms, cost: 2.9}\n",
         "channels: 1\n")
    found = problems(project)
    assert found and found[0].startswith("campaignctl.yaml:8:11: channels: expected"), found


def test_bad_yaml_syntax(project):
    edit(project, "segments.yaml", "orders: {metric: count, gte: 1}", "orders: {metric: count, gte: 1")
    found = problems(project)
    assert len(found) == 1 and found[0].startswith("segments.yaml:6:") and ": yaml: " in found[0]


def test_duplicate_keys(project):
    edit(project, "campaigns/winback.yaml", "    control: 0.1", "    control: 0.1\n    control: 0.2")
    assert problems(project) == ["campaigns/winback.yaml:15:5: yaml: duplicate key 'control' (first defined at line 14) (remove or rename one of them)"]


def test_names_defined_twice_across_files(project):
    (project / "extra").mkdir()
    (project / "extra/more.yaml").write_text("version: 1\nsegments:\n  buyers:\n    where: {consent: email}\n")
    assert problems(project) == ["extra/more.yaml:3:3: segment: segment 'buyers' is defined twice (first at segments.yaml:3:3) (rename one of them)"]


def test_reference_cycle(project):
    edit(project, "segments.yaml", "orders: {metric: count, gte: 1}", "segment: lapsed")
    assert problems(project) == [
        "segments.yaml:9:20: segment: segments refer to each other in a cycle: buyers -> lapsed -> buyers (break the cycle: a segment cannot include itself)"
    ]


def test_template_that_does_not_compile(project):
    (project / "templates/winback.mjml").write_text("<mjml><mj-body>\n<mj-text>Hi {{ customer.first_name }</mj-text>\n</mj-body></mjml>\n")
    found = problems(project)
    assert len(found) == 1 and found[0].startswith("templates/winback.mjml:2:1: mjml: template does not compile:")


def test_inline_template_that_does_not_compile(project):
    edit(project, "templates.yaml", "{{ offer.promo_code }}", "{{ offer.promo_code }")
    found = problems(project)
    assert len(found) == 1 and found[0].startswith("templates.yaml:9:11: body: template does not compile:")


def test_mjml_that_does_not_parse(project):
    (project / "templates/winback.mjml").write_text("<mjml><mj-body><mj-section><mj-column><mj-text>Hi</mj-column></mj-section></mj-body></mjml>\n")
    found = problems(project)
    assert len(found) == 1 and found[0].startswith("templates/winback.mjml:1:1: mjml: MJML does not parse:")


def test_missing_template_file(project):
    (project / "templates/winback.mjml").unlink()
    assert problems(project) == ["templates.yaml:6:11: mjml: template file 'templates/winback.mjml' does not exist (create it or fix the path (relative to the project directory))"]


def test_template_for_the_wrong_channel(project):
    edit(project, "cascades.yaml", "template: winback_sms", "template: winback_email")
    assert problems(project) == [
        "cascades.yaml:10:19: template: template 'winback_email' is for email, but channel 'sms' sends sms (use a sms template, or `templates:` to give one per channel)"
    ]


def test_unknown_plugin(project):
    edit(project, "campaignctl.yaml", "plugin: duckdb", "plugin: duckdbb")
    assert problems(project) == ["campaignctl.yaml:6:11: plugin: unknown data source plugin 'duckdbb' (did you mean 'duckdb'?)"]


def test_unknown_state_store_plugin(project):
    edit(project, "campaignctl.yaml", "currency: RUB", "currency: RUB\nstate_store: {plugin: sqlit}")
    assert problems(project) == ["campaignctl.yaml:5:23: plugin: unknown state store plugin 'sqlit' (did you mean 'sqlite'?)"]


def test_missing_and_unsupported_versions(project):
    edit(project, "segments.yaml", "version: 1\n", "")
    edit(project, "templates.yaml", "version: 1", "version: 2")
    assert problems(project) == [
        "segments.yaml:1:1: version: missing `version` (add `version: 1` at the top of the file)",
        "templates.yaml:1:10: version: unsupported version 2 (this campaignctl reads version 1)",
    ]


def test_no_project_file(tmp_path):
    found = problems(tmp_path / "nowhere")
    assert len(found) == 1 and "no campaignctl.yaml found" in found[0]


def test_all_errors_in_one_run_and_exit_1(project):
    edit(project, "campaigns/winback.yaml", "cascade: cheap_first", "cascade: cheep_first")
    edit(project, "campaigns/winback.yaml", "offer: minus_300", "offer: minus_3000")
    edit(project, "segments.yaml", "metric: days_since_last", "metric: days_since_lst")
    edit(project, "campaignctl.yaml", "currency: RUB", "currency: RUB\ncolour: red")
    result = CliRunner().invoke(cli, ["-C", str(project), "validate", "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["valid"] is False and report["error_count"] == 4
    where = sorted((d["file"], d["line"]) for d in report["diagnostics"])
    assert where == [("campaignctl.yaml", 5), ("campaigns/winback.yaml", 12), ("campaigns/winback.yaml", 13), ("segments.yaml", 10)]


def test_cli_text_output(project):
    edit(project, "campaigns/winback.yaml", "cascade: cheap_first", "cascade: cheep_first")
    result = CliRunner().invoke(cli, ["-C", str(project), "validate"], env={"NO_COLOR": "1"})
    assert result.exit_code == 1
    assert "campaigns/winback.yaml:12:14: error: cascade: unknown cascade 'cheep_first'" in result.output
    assert "1 error in 1 file." in result.output


def test_cli_valid_project(project):
    result = CliRunner().invoke(cli, ["validate", str(project)], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "is valid: 1 campaigns, 2 segments" in result.output
