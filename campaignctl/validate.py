"""Everything the schemas cannot say: references between definitions, cycles
among segments, plugin names, template files. Works on the located documents
and returns every problem at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from .diagnostics import Diagnostic, Location
from .loader import LDict, locate
from .schemas_registry import suggest

KINDS = ("features", "segments", "offers", "templates", "cascades", "campaigns")
SINGULAR = {"features": "feature", "segments": "segment", "offers": "offer", "templates": "template", "cascades": "cascade", "campaigns": "campaign", "channels": "channel",
            "promo_pools": "promo pool"}
# Named sections of the project file that definitions refer to, like channels.
PROJECT_SECTIONS = ("channels", "promo_pools")


@dataclass
class Entry:
    """One named definition as read: its spec and where its name stands."""

    name: str
    spec: Any
    location: Location


@dataclass
class Documents:
    """The project file and every definition, indexed by kind and name."""

    project: LDict
    definitions: dict[str, dict[str, Entry]] = field(default_factory=lambda: {kind: {} for kind in KINDS})

    def names(self, kind: str) -> dict[str, Entry]:
        if kind in PROJECT_SECTIONS:
            section = project_section(self.project, kind)
            return {name: Entry(name, spec, locate(section, (name,), key=True)) for name, spec in section.items()}
        return self.definitions[kind]


def project_section(project: Mapping, kind: str) -> Mapping:
    """The project file's ``kind`` section (channels, offer_sinks...), empty
    when missing or not a mapping (the schema check reports that one)."""
    section = project.get(kind)
    return section if isinstance(section, Mapping) else {}


# (kind, path with "*" for every item or value, target kind). "$cheapest" marks
# the one name that is not a reference.
REFERENCES: tuple[tuple[str, tuple, str], ...] = (
    ("campaigns", ("audience",), "segments"),
    ("campaigns", ("exclude", "*"), "segments"),
    ("campaigns", ("cascade",), "cascades"),
    ("campaigns", ("offer",), "offers"),
    ("campaigns", ("message", "channel"), "channels"),
    ("campaigns", ("message", "template"), "templates"),
    ("campaigns", ("message", "templates", "*"), "templates"),
    ("campaigns", ("message", "offer"), "offers"),
    ("campaigns", ("arms", "*", "offer"), "offers"),
    ("campaigns", ("trigger", "segment_entry"), "segments"),
    ("cascades", ("steps", "*", "channel"), "channels"),
    ("cascades", ("steps", "*", "template"), "templates"),
    ("cascades", ("steps", "*", "templates", "*"), "templates"),
    ("cascades", ("steps", "*", "offer"), "offers"),
    ("offers", ("promo_codes", "pool"), "promo_pools"),
)
CHEAPEST = "cheapest"


def values_at(node: Any, pattern: tuple, prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (path, value) in ``node`` matching ``pattern``; "*" walks all items
    of a list or all values of a mapping."""
    if not pattern:
        yield prefix, node
        return
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        items = enumerate(node) if isinstance(node, list) else node.items() if isinstance(node, dict) else ()
        for key, child in items:
            yield from values_at(child, rest, prefix + (key,))
    elif isinstance(node, dict) and head in node:
        yield from values_at(node[head], rest, prefix + (head,))


def check_references(docs: Documents) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    for kind, pattern, target in REFERENCES:
        known = docs.names(target)
        for entry in docs.definitions[kind].values():
            for path, value in values_at(entry.spec, pattern):
                if not isinstance(value, str) or value in known:
                    continue
                if target == "channels" and value == CHEAPEST:
                    continue
                diagnostics.append(_unknown(entry.spec, path, SINGULAR[target], value, known))
    diagnostics += _check_condition_references(docs)
    diagnostics += _check_template_channels(docs)
    return diagnostics


def _unknown(spec: Any, path: tuple, what: str, value: str, known: dict) -> Diagnostic:
    field_name = next((p for p in reversed(path) if isinstance(p, str)), what)
    hint = suggest(value, known) or (f"defined {what}s: {', '.join(sorted(known))}" if 0 < len(known) <= 8 else f"define {what} {value!r} or fix the name")
    return Diagnostic(locate(spec, path), field_name, f"unknown {what} {value!r}", hint)


def walk_conditions(condition: Any, path: tuple = ()) -> Iterator[tuple[tuple, str, Any]]:
    """Every (path, key, value) of a condition tree, depth first."""
    if not isinstance(condition, dict):
        return
    for key, value in condition.items():
        yield path, key, value
        if key in ("all", "any") and isinstance(value, list):
            for index, child in enumerate(value):
                yield from walk_conditions(child, path + (key, index))
        elif key == "not":
            yield from walk_conditions(value, path + (key,))


def segment_references(spec: Any) -> Iterator[tuple[tuple, str]]:
    """(path, segment name) of every segment a segment's condition refers to."""
    for path, key, value in walk_conditions(spec.get("where") if isinstance(spec, dict) else None, ("where",)):
        if key == "segment" and isinstance(value, str):
            yield path + ("segment",), value


def _check_condition_references(docs: Documents) -> list[Diagnostic]:
    segments, features = docs.names("segments"), docs.names("features")
    diagnostics = []
    for entry in segments.values():
        for path, key, value in walk_conditions(entry.spec.get("where") if isinstance(entry.spec, dict) else None, ("where",)):
            if key == "segment" and isinstance(value, str) and value not in segments:
                diagnostics.append(_unknown(entry.spec, path + ("segment",), "segment", value, segments))
            elif key == "feature" and isinstance(value, dict) and isinstance(value.get("name"), str):
                name = value["name"].split(".", 1)[0]  # rfm.r names a part of feature rfm
                if name not in features:
                    diagnostics.append(_unknown(entry.spec, path + ("feature", "name"), "feature", name, features))
    diagnostics += _check_cycles(segments)
    return diagnostics


def _check_cycles(segments: dict[str, Entry]) -> list[Diagnostic]:
    """Report each cycle once, at the reference that closes it."""
    edges = {name: list(segment_references(entry.spec)) for name, entry in segments.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []
    diagnostics: list[Diagnostic] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for path, target in edges.get(name, ()):
            if target not in segments:
                continue
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                diagnostics.append(
                    Diagnostic(
                        locate(segments[name].spec, path),
                        "segment",
                        f"segments refer to each other in a cycle: {' -> '.join(cycle)}",
                        "break the cycle: a segment cannot include itself",
                    )
                )
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in segments:
        if name not in state:
            visit(name)
    return diagnostics


def _field(entry: Entry, key: str) -> Any:
    return entry.spec.get(key) if isinstance(entry.spec, dict) else None


def _check_template_channels(docs: Documents) -> list[Diagnostic]:
    """A step that names one template for one channel must use a template made for it."""
    channels, templates = docs.names("channels"), docs.names("templates")
    diagnostics = []

    def check(owner: Entry, step_path: tuple, step: Any) -> None:
        if not isinstance(step, dict):
            return
        channel_name, template_name = step.get("channel"), step.get("template")
        if not isinstance(template_name, str) or template_name not in templates or not isinstance(channel_name, str) or channel_name not in channels:
            return
        channel_kind = _field(channels[channel_name], "kind")
        template_kind = _field(templates[template_name], "channel")
        if channel_kind and template_kind and channel_kind != template_kind:
            diagnostics.append(
                Diagnostic(
                    locate(owner.spec, step_path + ("template",)),
                    "template",
                    f"template {template_name!r} is for {template_kind}, but channel {channel_name!r} sends {channel_kind}",
                    f"use a {channel_kind} template, or `templates:` to give one per channel",
                )
            )
        per_channel = step.get("templates")
        for kind, name in (per_channel.items() if isinstance(per_channel, dict) else ()):
            if isinstance(name, str) and name in templates and _field(templates[name], "channel") != kind:
                diagnostics.append(
                    Diagnostic(
                        locate(owner.spec, step_path + ("templates", kind)),
                        "templates",
                        f"template {name!r} is for {_field(templates[name], 'channel')}, not {kind}",
                        "give each channel kind a template made for it",
                    )
                )

    for entry in docs.definitions["cascades"].values():
        for path, step in values_at(entry.spec, ("steps", "*")):
            check(entry, path, step)
    for entry in docs.definitions["campaigns"].values():
        if isinstance(entry.spec, dict) and "message" in entry.spec:
            check(entry, ("message",), entry.spec["message"])
    return diagnostics


def check_plugins(docs: Documents, available: dict[str, set[str]]) -> list[Diagnostic]:
    """Plugin names in the project file must be installed (and not blocked)."""
    diagnostics = []
    project = docs.project
    checks: list[tuple[tuple, str, str]] = [(("data_source", "plugin"), "data source", "data_sources"), (("state_store", "plugin"), "state store", "state_stores")]
    checks += [(("channels", name, "plugin"), "channel", "channels") for name in project_section(project, "channels")]
    checks += [(("offer_sinks", name, "plugin"), "offer sink", "offer_sinks") for name in project_section(project, "offer_sinks")]
    for path, what, registry_kind in checks:
        for _, value in values_at(project, path):
            names = available.get(registry_kind, set())
            if isinstance(value, str) and value not in names:
                hint = suggest(value, names) or f"installed {what} plugins: {', '.join(sorted(names)) or 'none'}; see `campaignctl plugins`"
                diagnostics.append(Diagnostic(locate(project, path), "plugin", f"unknown {what} plugin {value!r}", hint))
    return diagnostics

