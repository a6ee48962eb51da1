"""The JSON Schemas in schemas/v1, and every YAML file of the example project and
the init scaffold checked against them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from campaignctl.loader import load_file

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas" / "v1"
EXAMPLE = ROOT / "campaigns"
SCAFFOLD = ROOT / "campaignctl" / "scaffold"
BASE = "https://campaignctl.dev/schemas/v1/"
KINDS = ["project", "feature", "segment", "condition", "offer", "template", "cascade", "campaign", "document", "common"]


def _schemas() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(SCHEMAS.glob("*.json"))}


ALL = _schemas()
REGISTRY = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in ALL.values())


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(ALL[name], registry=REGISTRY)


def errors(name: str, instance) -> list[tuple[list, str]]:
    return sorted(((list(e.absolute_path), e.message) for e in validator(name).iter_errors(instance)), key=str)


def yaml_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and not any(part.startswith(".") for part in p.relative_to(root).parts))


# ------------------------------------------------------------------ the schemas


def test_every_kind_has_a_schema():
    assert sorted(ALL) == sorted(f"{k}.json" for k in KINDS)


@pytest.mark.parametrize("name", sorted(ALL))
def test_schema_is_valid_2020_12(name):
    schema = ALL[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == BASE + name
    assert schema.get("description")
    if name != "common.json":
        assert schema.get("examples"), "top-level schemas carry examples"
        for example in schema["examples"]:
            assert not list(validator(name).iter_errors(example)), example


def _walk(node, path=()):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, path + (i,))


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_property_has_a_description(name):
    missing = []
    for path, node in _walk(ALL[name]):
        if "examples" in path or "enum" in path or "const" in path:
            continue
        props = node.get("properties")
        if not isinstance(props, dict) or path[-1:] == ("properties",):
            continue
        if path[-1:] == ("if",) and path[-2:-1] != ("properties",):
            continue  # an `if` tests keys declared elsewhere; it declares nothing
        for key, sub in props.items():
            # `not` schemas that forbid a key (a rule, not a property) need no description
            if isinstance(sub, dict) and set(sub) == {"not"}:
                continue
            if not (isinstance(sub, dict) and sub.get("description")):
                missing.append("/".join(map(str, path + ("properties", key))))
    assert not missing, "properties without a description:\n" + "\n".join(missing)


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_object_is_strict(name):
    """Objects with properties say what else is allowed: additionalProperties or
    unevaluatedProperties false, except plugin options and if/then fragments."""
    loose = []
    for path, node in _walk(ALL[name]):
        if "examples" in path or not isinstance(node.get("properties"), dict):
            continue
        if path and path[-1] in ("if", "then", "else") or "allOf" in path or "dependentSchemas" in path:
            continue  # fragments applied inside a strict object
        if path and path[-2:-1] == ("$defs",) and name in ("common.json", "condition.json") and path[-1] in ("comparison", "orders_measure", "order_lines_measure", "events_measure"):
            continue  # building blocks: strictness is added where they are used
        if node.get("additionalProperties") is False or node.get("unevaluatedProperties") is False:
            continue
        loose.append("/".join(map(str, path)))
    assert not loose, "objects that accept unknown keys:\n" + "\n".join(loose)


# ------------------------------------------------------------------ the example project and the scaffold


def _load(path: Path):
    result = load_file(path, str(path.relative_to(ROOT)))
    assert not result.diagnostics, [str(d) for d in result.diagnostics]
    return result.value


def _cases():
    for root in (EXAMPLE, SCAFFOLD):
        for path in yaml_files(root):
            yield pytest.param(root, path, id=str(path.relative_to(ROOT)))


@pytest.mark.parametrize("root,path", list(_cases()))
def test_yaml_file_validates(root, path):
    value = _load(path)
    kind = "project.json" if path.name == "campaignctl.yaml" else "document.json"
    assert errors(kind, value) == []
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema="), first
    target = first.split("$schema=", 1)[1].strip()
    if target.startswith("https://"):
        assert target == BASE + kind
    else:
        assert (path.parent / target).resolve() == (SCHEMAS / kind).resolve(), target


@pytest.mark.parametrize("root", [EXAMPLE, SCAFFOLD], ids=["example", "scaffold"])
def test_project_has_a_project_file_and_documents(root):
    assert (root / "campaignctl.yaml").is_file()
    sections: dict[str, set[str]] = {}
    for path in yaml_files(root):
        if path.name == "campaignctl.yaml":
            continue
        for section, defs in _load(path).items():
            if section == "version":
                continue
            names = sections.setdefault(section, set())
            assert not names & set(defs), f"{path}: duplicate {section} {names & set(defs)}"
            names.update(defs)
    expected = {"segments", "offers", "templates", "cascades", "campaigns"}
    assert expected <= set(sections)


def _templates(root: Path) -> dict[str, dict]:
    out = {}
    for path in yaml_files(root):
        if path.name != "campaignctl.yaml":
            out.update(_load(path).get("templates", {}))
    return out


@pytest.mark.parametrize("root", [EXAMPLE, SCAFFOLD], ids=["example", "scaffold"])
def test_template_bodies_exist_compile_and_parse(root):
    from jinja2.sandbox import SandboxedEnvironment
    from mjml import mjml2html

    env = SandboxedEnvironment()
    for name, spec in _templates(root).items():
        for part in ("mjml", "html", "amp", "text", "body"):
            value = spec.get(part)
            if value is None:
                continue
            if isinstance(value, dict):
                value = value["file"]
            elif part == "body":
                env.parse(value)
                continue
            file = root / value
            assert file.is_file(), f"template {name}: {part} file {value} is missing"
            source = file.read_text(encoding="utf-8")
            env.parse(source)
            if part == "mjml":
                html = mjml2html(source)
                html = html if isinstance(html, str) else html.html
                assert "<html" in html and "<mj-" not in html, f"{value} did not compile"
                env.parse(html)  # Jinja still parses after compiling
        for part in ("subject", "preheader", "title", "url"):
            if isinstance(spec.get(part), str):
                env.parse(spec[part])


def test_example_project_expresses_the_scenarios():
    docs = {}
    for path in yaml_files(EXAMPLE):
        if path.name != "campaignctl.yaml":
            for section, defs in _load(path).items():
                if section != "version":
                    docs.setdefault(section, {}).update(defs)
    campaigns = docs["campaigns"]
    assert {c["kind"] for c in campaigns.values()} == {"broadcast", "recurring", "triggered"}
    assert len(campaigns) >= 16
    assert any(len(c.get("arms", [])) == 3 and all("offer" in a for a in c["arms"]) for c in campaigns.values())
    assert any(c.get("arms") and all("delay" in a for a in c["arms"]) for c in campaigns.values())
    offers = docs["offers"]
    fixed = sorted((o["amount"], o["min_check"]) for o in offers.values() if o["kind"] == "fixed_discount")
    assert {(250, 2000), (300, 3000), (500, 4000), (600, 5000), (500, 2500)} <= set(fixed)
    assert {o["percent"] for o in offers.values() if o["kind"] == "percent_discount"} >= {10, 15, 20}
    assert any(t.get("amp") for t in docs["templates"].values())
    project = _load(EXAMPLE / "campaignctl.yaml")
    assert project["policies"]["global_holdout"] == 0.05
    assert {c["kind"] for c in project["channels"].values()} == {"email", "sms", "push", "web_push", "whatsapp", "telegram", "web_layer"}


# ------------------------------------------------------------------ wrong snippets are rejected where they are wrong


def doc(**sections):
    return {"version": 1, **sections}


WRONG = [
    ("unknown key in a segment", doc(segments={"a": {"where": {"segment": "b"}, "filter": 1}}), ["segments", "a"], "'filter' was unexpected"),
    ("two keys in a condition", doc(segments={"a": {"where": {"segment": "b", "consent": "email"}}}), ["segments", "a", "where"], "too many properties"),
    ("unknown condition key", doc(segments={"a": {"where": {"purchases": {}}}}), ["segments", "a", "where"], "'purchases' was unexpected"),
    ("two operators", doc(segments={"a": {"where": {"orders": {"metric": "count", "gte": 1, "lt": 5}}}}),
     ["segments", "a", "where", "orders", "gte"], "only one comparison operator"),
    ("sum without of", doc(segments={"a": {"where": {"all": [{"orders": {"metric": "sum", "gt": 1}}]}}}),
     ["segments", "a", "where", "all", 0, "orders"], "'of' is a required property"),
    ("bad duration", doc(segments={"a": {"where": {"orders": {"metric": "count", "period": {"last": "7 days"}, "gte": 1}}}}),
     ["segments", "a", "where", "orders", "period", "last"], "does not match"),
    ("customer without operator", doc(segments={"a": {"where": {"customer": {"field": "city"}}}}), ["segments", "a", "where", "customer"], "does not have enough properties"),
    ("unknown customer field", doc(segments={"a": {"where": {"customer": {"field": "town", "eq": "Moscow"}}}}), ["segments", "a", "where", "customer", "field"], "is not one of"),
    ("bad offer kind", doc(offers={"a": {"kind": "discount", "amount": 1}}), ["offers", "a", "kind"], "is not one of"),
    ("key of another offer kind", doc(offers={"a": {"kind": "fixed_discount", "amount": 250, "points": 3000}}), ["offers", "a"], "'points' was unexpected"),
    ("missing kind key", doc(offers={"a": {"kind": "percent_discount"}}), ["offers", "a"], "'percent' is a required property"),
    ("e-mail without a body", doc(templates={"a": {"channel": "email", "subject": "x"}}), ["templates", "a"], "'mjml' is a required property"),
    ("sms with a subject", doc(templates={"a": {"channel": "sms", "body": "x", "subject": "y"}}), ["templates", "a"], "'subject' was unexpected"),
    ("cheapest with template", doc(cascades={"a": {"steps": [{"channel": "cheapest", "template": "t", "templates": {"email": "t"}}]}}),
     ["cascades", "a", "steps", 0, "template"], "takes templates"),
    ("bad step condition", doc(cascades={"a": {"steps": [{"channel": "sms", "template": "t", "if": "not_read"}]}}), ["cascades", "a", "steps", 0, "if"], "is not one of"),
    ("triggered without trigger", doc(campaigns={"a": {"kind": "triggered", "audience": "s", "cascade": "c"}}), ["campaigns", "a"], "'trigger' is a required property"),
    ("schedule on a triggered campaign", doc(campaigns={"a": {"kind": "triggered", "audience": "s", "cascade": "c", "trigger": {"event": "cart_updated"}, "schedule": {"at": "2026-12-01T10:00"}}}),
     ["campaigns", "a"], "'schedule' was unexpected"),
    ("cascade and message", doc(campaigns={"a": {"kind": "broadcast", "audience": "s", "cascade": "c", "message": {"channel": "sms", "template": "t"}, "schedule": {"at": "2026-12-01T10:00"}}}),
     ["campaigns", "a", "cascade"], "cascade or message"),
    ("bad timestamp", doc(campaigns={"a": {"kind": "broadcast", "audience": "s", "cascade": "c", "schedule": {"at": "2026-12-01 10:00"}}}), ["campaigns", "a", "schedule", "at"], "does not match"),
    ("control too large", doc(campaigns={"a": {"kind": "broadcast", "audience": "s", "cascade": "c", "control": 0.9, "schedule": {"at": "2026-12-01T10:00"}}}), ["campaigns", "a", "control"], "maximum"),
    ("bad name", doc(segments={"Loyal": {"where": {"segment": "x"}}}), ["segments"], "does not match"),
    ("no section", doc(), [], "does not have enough properties"),
    ("bad feature kind key", doc(features={"f": {"kind": "rfm", "period": {"last": "365d"}, "recency": {"quantiles": 5}, "frequency": {"quantiles": 5}, "monetary": {"quantiles": 5, "thresholds": [1]}}}),
     ["features", "f", "monetary", "thresholds"], "either quantiles or thresholds"),
]


@pytest.mark.parametrize("instance,path,message", [pytest.param(i, p, m, id=name) for name, i, p, m in WRONG])
def test_wrong_snippets_are_rejected_at_the_right_path(instance, path, message):
    found = errors("document.json", instance)
    assert found, "accepted"
    assert any(p == path and message in m for p, m in found), found


PROJECT = {"version": 1, "name": "shop", "timezone": "Europe/Moscow", "currency": "RUB", "data_source": {"plugin": "duckdb"},
           "channels": {"email": {"plugin": "outbox", "kind": "email", "cost": 0.15}}}


@pytest.mark.parametrize(
    "patch,path,message",
    [
        ({"currency": "rub"}, ["currency"], "does not match"),
        ({"channels": {"email": {"plugin": "outbox", "kind": "mail", "cost": 0.1}}}, ["channels", "email", "kind"], "is not one of"),
        ({"channels": {"any": {"plugin": "outbox", "kind": "sms", "cost": 1}}}, ["channels"], "should not be valid"),
        ({"policies": {"quiet_hours": {"start": "9pm", "end": "09:00"}}}, ["policies", "quiet_hours", "start"], "does not match"),
        ({"policies": {"frequency_caps": [{"channel": "any", "max": 3}]}}, ["policies", "frequency_caps", 0], "'per' is a required property"),
        ({"data_source": {"plugin": "duckdb", "tables": {"orders": {"columns": {"when": "created_at"}}}}}, ["data_source", "tables", "orders", "columns"], "is not one of"),
        ({"policies": {"global_holdout": 0.6}}, ["policies", "global_holdout"], "maximum"),
        ({"version": 2}, ["version"], "1 was expected"),
    ],
)
def test_wrong_project_files_are_rejected(patch, path, message):
    found = errors("project.json", {**PROJECT, **patch})
    assert any(p == path and message in m for p, m in found), found


def test_plugin_options_are_free_form():
    project = {**PROJECT, "data_source": {"plugin": "postgres", "options": {"dsn": "${env:PG_DSN}", "pool": {"size": 4}}}}
    assert errors("project.json", project) == []


def test_format_doc_examples_validate():
    """docs/format.md stays true to the schemas: its YAML examples validate."""
    import re

    from campaignctl.loader import load_text

    text = (ROOT / "docs" / "format.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "{...}" not in b]
    assert len(blocks) >= 6
    for block in blocks:
        value = load_text(block if "\nversion: 1" in "\n" + block else "version: 1\n" + block, "docs/format.md").value
        kind = "project.json" if "data_source:" in block else "document.json"
        assert errors(kind, value) == [], block[:200]
