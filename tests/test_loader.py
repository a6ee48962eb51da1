"""The YAML loader: safe, located, strict about duplicates, no surprise types."""

from __future__ import annotations

import pytest

from campaignctl.loader import LDict, LList, load_text, locate
from campaignctl.secrets import references, resolve


def load(text: str):
    result = load_text(text, "f.yaml")
    return result.value, [str(d) for d in result.diagnostics]


def test_every_value_keeps_its_position():
    value, problems = load("version: 1\nsegments:\n  loyal:\n    where:\n      all:\n        - segment: a\n        - segment: b\n")
    assert problems == []
    assert isinstance(value, LDict) and isinstance(value["segments"]["loyal"]["where"]["all"], LList)
    assert str(locate(value, ("segments", "loyal", "where", "all", 1, "segment"))) == "f.yaml:7:20"
    assert str(locate(value, ("segments", "loyal"), key=True)) == "f.yaml:3:3"


def test_locate_falls_back_to_the_nearest_ancestor():
    value, _ = load("a:\n  b: 1\n")
    assert str(locate(value, ("a", "missing", 3))) == "f.yaml:2:3"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("d: 2026-12-01", "2026-12-01"),  # dates stay strings
        ("t: 10:30", "10:30"),  # times too (YAML 1.1 would make 630)
        ("n: no", "no"),  # the Norway problem
        ("b: yes", "yes"),
        ("b: true", True),
        ("i: 0x1F", 31),
        ("f: 1.5e3", 1500.0),
        ("z: ~", None),
        ("q: '12'", "12"),
        ("v: 1_000", "1_000"),
    ],
)
def test_scalars_follow_the_core_schema(text, expected):
    value, problems = load(text)
    assert problems == []
    assert list(value.values()) == [expected]


def test_duplicate_keys_are_errors_with_both_positions():
    _, problems = load("a: 1\nb:\n  c: 1\n  c: 2\n")
    assert problems == ["f.yaml:4:3: yaml: duplicate key 'c' (first defined at line 3) (remove or rename one of them)"]


def test_unsafe_tags_are_refused():
    _, problems = load("a: !!python/object/apply:os.system ['echo hi']\n")
    assert problems and "not allowed" in problems[0] and problems[0].startswith("f.yaml:1:4")


def test_syntax_errors_are_located():
    _, problems = load("a: 1\nb: [1, 2\nc: 3\n")
    assert len(problems) == 1 and problems[0].startswith("f.yaml:3:")


def test_tabs_get_a_hint():
    _, problems = load("a:\n\tb: 1\n")
    assert "indent with spaces" in problems[0]


def test_several_documents_are_refused():
    _, problems = load("a: 1\n---\nb: 2\n")
    assert "more than one YAML document" in problems[0]


def test_anchors_and_aliases_work():
    value, problems = load("base: &b {x: 1}\nother: *b\n")
    assert problems == [] and value["other"] == {"x": 1}


def test_secret_references_are_found_and_resolved_late():
    value, _ = load("options:\n  dsn: postgresql://app:${env:PG_PASSWORD}@db/crm\n  user: ${env:PG_USER}\n")
    assert references(value["options"]) == [(("dsn",), "PG_PASSWORD"), (("user",), "PG_USER")]
    resolved, problems = resolve(value["options"], {"PG_PASSWORD": "s3cret"}, where=value, base=("options",))
    assert resolved["dsn"] == "postgresql://app:s3cret@db/crm"
    assert [str(p) for p in problems] == ["f.yaml:3:9: secret: environment variable PG_USER is not set (export PG_USER=... before running this command)"]
    assert "s3cret" not in str(value)  # the located document itself never holds the value
