"""The JSON Schemas of schemas/v1 and the translation of their errors into
located, readable diagnostics."""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

import jsonschema
import jsonschema_rs
from referencing import Registry, Resource

from .diagnostics import Diagnostic
from .loader import locate

SCHEMA_VERSION = "v1"
BASE_URI = "https://campaignctl.dev/schemas/v1/"


def schema_files() -> dict[str, dict]:
    """Every schema of this version by file name (``project.json`` ...)."""
    folder = resources.files("campaignctl.schemas") / SCHEMA_VERSION
    return {entry.name: json.loads(entry.read_text("utf-8")) for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.name.endswith(".json")}


@lru_cache(maxsize=1)
def _registry() -> Registry:
    schemas = schema_files()
    resources_ = [(schema.get("$id", BASE_URI + name), Resource.from_contents(schema)) for name, schema in schemas.items()]
    return Registry().with_resources(resources_)


@lru_cache(maxsize=None)
def fast_validator(name: str):
    """The same schema compiled by jsonschema-rs: answers "valid?" about forty
    times faster than jsonschema, which we keep for explaining what is wrong."""
    schemas = schema_files()
    registry = jsonschema_rs.Registry([(schema.get("$id", BASE_URI + file), schema) for file, schema in schemas.items()])
    return jsonschema_rs.validator_for(schemas[name], registry=registry)


@lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.protocols.Validator:
    """A validator for ``project.json`` or ``document.json`` with $refs resolved."""
    schema = schema_files()[name]
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=_registry())


def schema_errors(instance: Any, schema_name: str, *, base_path: tuple = ()) -> list[Diagnostic]:
    """All schema violations of ``instance`` as located diagnostics."""
    if fast_validator(schema_name).is_valid(instance):
        return []
    diagnostics: list[Diagnostic] = []
    for error in validator(schema_name).iter_errors(instance):
        diagnostics.extend(_explain(instance, error, base_path))
    return _dedupe(diagnostics)


def _dedupe(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for diagnostic in diagnostics:
        key = (diagnostic.location, diagnostic.message)
        if key not in seen:
            seen.add(key)
            out.append(diagnostic)
    return out


def suggest(name: Any, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)'-style hint text, or ''."""
    if not isinstance(name, str):
        return ""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean {matches[0]!r}?" if matches else ""


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _subject(path: tuple) -> str:
    names = [part for part in path if isinstance(part, str)]
    return names[-1] if names else "document"


def _explain(root: Any, error: jsonschema.ValidationError, base_path: tuple) -> list[Diagnostic]:
    path = tuple(error.absolute_path)
    where = locate(root, path)
    subject = _subject(base_path + path)
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(schema.get("properties", {}))
        extras = [key for key in error.instance if key not in allowed and not _matches_patterns(key, schema)]
        return [
            Diagnostic(
                locate(root, path + (key,), key=True),
                subject if path else "document",
                f"unknown key {key!r}",
                suggest(key, allowed) or f"allowed here: {', '.join(sorted(allowed)) or 'nothing'}",
            )
            for key in extras
        ]
    if kind == "unevaluatedProperties" and isinstance(error.instance, dict):
        allowed = _declared_properties(schema)
        extras = [key for key in error.instance if key in _quoted(error.message)]
        return [
            Diagnostic(locate(root, path + (key,), key=True), subject if path else "document", f"unknown key {key!r}", suggest(key, allowed))
            for key in extras
        ] or [Diagnostic(where, subject, error.message)]
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [Diagnostic(where, subject, f"missing required key {missing!r}", _property_hint(schema, missing))]
    if kind == "type":
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        wanted = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
        return [Diagnostic(where, subject, f"expected {wanted}, got {_describe(error.instance)}")]
    if kind == "enum":
        options = [str(option) for option in error.validator_value]
        hint = suggest(error.instance, options) or f"choose one of: {', '.join(options)}"
        return [Diagnostic(where, subject, f"unknown {subject} {_describe(error.instance)}", hint)]
    if kind == "const":
        return [Diagnostic(where, subject, f"expected {error.validator_value!r}, got {_describe(error.instance)}")]
    if kind == "propertyNames":
        bad = error.instance
        return [Diagnostic(where, subject, f"{_describe(bad)} is not a valid name", "names are lowercase letters, digits and '_', starting with a letter")]
    if kind == "pattern":
        return [Diagnostic(where, subject, f"{_describe(error.instance)} is not in the expected format", _pattern_hint(error.validator_value, schema))]
    if kind in ("minProperties", "maxProperties") and isinstance(error.instance, dict):
        keys = ", ".join(map(str, error.instance)) or "none"
        return [Diagnostic(where, subject, f"expected exactly one key here, found {len(error.instance)} ({keys})", schema.get("description", ""))]
    if kind == "not":
        # The schemas title a `not` with the rule it enforces ("only one comparison operator").
        rule = error.validator_value.get("title") if isinstance(error.validator_value, dict) else None
        return [Diagnostic(where, subject, rule or f"{_describe(error.instance)} is not allowed here")]
    if kind in ("oneOf", "anyOf") and error.context:
        best = jsonschema.exceptions.best_match(error.context)
        return _explain(root, best, base_path)
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return [Diagnostic(where, subject, f"{_describe(error.instance)} is out of range ({kind} {error.validator_value})")]
    if kind in ("minItems", "maxItems", "uniqueItems", "minLength", "maxLength"):
        return [Diagnostic(where, subject, error.message.replace("'", ""))]
    return [Diagnostic(where, subject, error.message)]


def _quoted(message: str) -> set[str]:
    """Names jsonschema quotes in "('a', 'b' were unexpected)"."""
    import re

    tail = message[message.rfind("(") :]
    return set(re.findall(r"'([^']*)'", tail))


def _declared_properties(schema: dict) -> set[str]:
    """Property names a schema declares, including those of its if/then branches."""
    names = set(schema.get("properties", {}))
    for branch in schema.get("allOf", ()):
        for part in ("then", "else"):
            names |= set(branch.get(part, {}).get("properties", {}))
    return names


def _matches_patterns(key: str, schema: dict) -> bool:
    import re

    return any(re.search(pattern, key) for pattern in schema.get("patternProperties", {}))


def _property_hint(schema: dict, name: str) -> str:
    description = schema.get("properties", {}).get(name, {}).get("description", "")
    return description.split(". ")[0].rstrip(".") if description else ""


_PATTERN_HINTS = {
    "m|h|d|w|y": "write a duration such as 30m, 1h, 7d, 2w or 1y",
    "env:": "write secrets as ${env:NAME}",
}


def _pattern_hint(pattern: str, schema: dict) -> str:
    for needle, hint in _PATTERN_HINTS.items():
        if needle in pattern:
            return hint
    return schema.get("description", f"expected to match {pattern}")

