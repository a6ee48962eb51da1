"""Read a project directory into a validated Project: discover files, load them
with locations, validate (schemas, then references), build the frozen model.
Every problem of every file is collected before anything is reported."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable

from . import model
from .diagnostics import Diagnostic, Location, ProjectError, display_path
from .loader import LDict, load_file, locate
from .schemas_registry import schema_errors
from .templates import check_template, template_files
from .validate import KINDS, SINGULAR, Documents, Entry, check_plugins, check_references

PROJECT_FILE = "campaignctl.yaml"
SUPPORTED_VERSION = 1
DEFAULT_IGNORE = ("data", "out", "templates")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of reading a project: the model when it is valid, and every diagnostic."""

    project: model.Project | None
    diagnostics: tuple[Diagnostic, ...]
    files: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not _has_errors(list(self.diagnostics))


def find_project_file(path: Path) -> Path:
    return path if path.is_file() else path / PROJECT_FILE


def load_project(path: str | Path = ".", *, plugins: dict[str, set[str]] | None = None) -> model.Project:
    """The validated project at ``path``, or ProjectError with all diagnostics."""
    result = check_project(path, plugins=plugins)
    if not result.ok:
        raise ProjectError(list(result.diagnostics))
    assert result.project is not None
    return result.project


def check_project(path: str | Path = ".", *, plugins: dict[str, set[str]] | None = None) -> CheckResult:
    """Read and validate everything; ``plugins`` maps registry kinds to installed
    plugin names (default: what the plugin manager loaded)."""
    project_file = find_project_file(Path(path))
    root = project_file.parent
    shown_root = display_path(root, root)
    shown_file = display_path(project_file, root)
    if not project_file.is_file():
        where = Location(display_path(root, root) if root.exists() else str(path))
        hint = f"run `campaignctl init {path}` to create one, or point -C at a project directory"
        return CheckResult(None, (Diagnostic(where, "project", f"no {PROJECT_FILE} found", hint),), ())
    diagnostics: list[Diagnostic] = []
    project_doc = _load_versioned(project_file, shown_file, diagnostics)
    if project_doc is not None:
        diagnostics += schema_errors(project_doc, "project.json")
    project_doc = project_doc if isinstance(project_doc, LDict) else LDict(Location(shown_file, 1, 1))
    docs = Documents(project_doc)
    files = [shown_file]
    unreadable = not project_doc  # a file we could not read may define what others refer to
    for file in _document_files(root, project_file, project_doc):
        shown = display_path(file, root)
        files.append(shown)
        document = _load_versioned(file, shown, diagnostics)
        if document is None:
            unreadable = True
            continue
        schema_problems = schema_errors(document, "document.json")
        diagnostics += schema_problems
        _index(document, docs, diagnostics)
    if not unreadable:
        diagnostics += check_references(docs)
    if project_doc:
        diagnostics += check_plugins(docs, plugins if plugins is not None else _installed_plugins())
    for entry in docs.definitions["templates"].values():
        diagnostics += check_template(entry.spec, root, shown_root)
    project = None
    if not _has_errors(diagnostics):
        project = build_project(root, docs, tuple(files))
        diagnostics += _semantic_checks(project)
    ordered = tuple(sorted(diagnostics, key=lambda d: (d.location, d.message)))
    return CheckResult(None if _has_errors(diagnostics) else project, ordered, tuple(files))


def _has_errors(diagnostics: list[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)


def _installed_plugins() -> dict[str, set[str]]:
    from .plugins import registry

    found = registry()
    return {"data_sources": set(found.data_sources), "channels": set(found.channels), "state_stores": set(found.state_stores),
            "offer_sinks": set(found.offer_sinks)}


def _semantic_checks(project: model.Project) -> list[Diagnostic]:
    """Rules that need the built model (condition semantics the schema cannot state)."""
    from .promocodes import check_promo_pools
    from .segments import check_segments
    from .tracking import check_tracking

    return check_segments(project) + check_tracking(project) + check_promo_pools(project)


def _load_versioned(path: Path, shown: str, diagnostics: list[Diagnostic]) -> Any:
    """Load a file and check its top-level version before anything else."""
    result = load_file(path, shown)
    diagnostics += result.diagnostics
    document = result.value
    if result.value is None and not result.diagnostics:
        diagnostics.append(Diagnostic(Location(shown, 1, 1), "document", "the file is empty", "start it with `version: 1`"))
        return None
    if document is None:
        return None
    if not isinstance(document, dict):
        diagnostics.append(Diagnostic(Location(shown, 1, 1), "document", "expected a mapping at the top of the file", "start it with `version: 1`"))
        return None
    version = document.get("version")
    if version is None:
        diagnostics.append(Diagnostic(locate(document, ()), "version", "missing `version`", "add `version: 1` at the top of the file"))
        return None
    if version != SUPPORTED_VERSION:
        diagnostics.append(
            Diagnostic(locate(document, ("version",)), "version", f"unsupported version {version!r}", f"this campaignctl reads version {SUPPORTED_VERSION}")
        )
        return None
    return document


def _document_files(root: Path, project_file: Path, project_doc: dict) -> list[Path]:
    ignored = project_doc.get("ignore", DEFAULT_IGNORE)
    ignored = {str(name).strip("/") for name in ignored} if isinstance(ignored, list) else set(DEFAULT_IGNORE)
    found = []
    for directory, subdirs, names in os.walk(root):
        relative = Path(directory).relative_to(root)
        # Prune in place so ignored and hidden trees are never walked.
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and str(relative / d) not in ignored and d not in ("node_modules", "__pycache__"))
        for name in sorted(names):
            if name.endswith((".yaml", ".yml")) and not name.startswith("."):
                path = Path(directory) / name
                if path != project_file:
                    found.append(path)
    return found


def _index(document: LDict, docs: Documents, diagnostics: list[Diagnostic]) -> None:
    for kind in KINDS:
        section = document.get(kind)
        if not isinstance(section, dict):
            continue
        for name, spec in section.items():
            where = locate(section, (name,), key=True)
            known = docs.definitions[kind].get(name)
            if known is not None:
                diagnostics.append(
                    Diagnostic(where, SINGULAR[kind], f"{SINGULAR[kind]} {name!r} is defined twice (first at {known.location})", "rename one of them")
                )
                continue
            docs.definitions[kind][name] = Entry(name, spec, where)


def _frozen(value: Any) -> Any:
    """Read-only views of mappings handed to the model; located dicts keep their marks."""
    return value if isinstance(value, LDict) else MappingProxyType(dict(value or {}))


def build_project(root: Path, docs: Documents, files: tuple[str, ...]) -> model.Project:
    doc = docs.project
    source = doc["data_source"]
    tables = {
        logical: model.TableMapping(mapping.get("table", logical), MappingProxyType(dict(mapping.get("columns", {}))))
        for logical, mapping in (source.get("tables") or {}).items()
    }
    state = doc.get("state_store") or {"plugin": "sqlite"}
    channels = {
        name: model.Channel(name, spec["plugin"], spec["kind"], float(spec.get("cost", 0)), _frozen(spec.get("options")), locate(doc["channels"], (name,), key=True))
        for name, spec in doc["channels"].items()
    }
    d = docs.definitions
    return model.Project(
        root=root,
        name=doc["name"],
        timezone=doc["timezone"],
        currency=doc["currency"],
        data_source=model.DataSourceConfig(source["plugin"], _frozen(source.get("options")), locate(doc, ("data_source",)), MappingProxyType(tables)),
        state_store=model.PluginConfig(state["plugin"], _frozen(state.get("options")), locate(doc, ("state_store",))),
        channels=MappingProxyType(channels),
        policies=_policies(doc.get("policies") or {}),
        features=_mapping(model.Feature(e.name, e.location, e.spec, kind=e.spec["kind"]) for e in d["features"].values()),
        segments=_mapping(model.Segment(e.name, e.location, e.spec) for e in d["segments"].values()),
        offers=_mapping(model.Offer(e.name, e.location, e.spec, kind=e.spec["kind"]) for e in d["offers"].values()),
        templates=_mapping(
            model.Template(e.name, e.location, e.spec, channel=e.spec["channel"], files=MappingProxyType(template_files(e.spec, root)))
            for e in d["templates"].values()
        ),
        cascades=_mapping(_cascade(e) for e in d["cascades"].values()),
        campaigns=_mapping(_campaign(e) for e in d["campaigns"].values()),
        tracking=_tracking(doc.get("tracking")),
        promo_pools=_mapping_by_name(_promo_pool(root, name, spec, locate(doc["promo_pools"], (name,), key=True))
                                     for name, spec in (doc.get("promo_pools") or {}).items()),
        offer_sinks=_mapping_by_name(
            model.OfferSinkConfig(spec["plugin"], _frozen(spec.get("options")), locate(doc["offer_sinks"], (name,), key=True), name=name)
            for name, spec in (doc.get("offer_sinks") or {}).items()
        ),
        files=files,
    )


def _mapping(definitions: Iterable[model.Definition]) -> MappingProxyType:
    return MappingProxyType({definition.name: definition for definition in definitions})


def _mapping_by_name(items: Iterable[Any]) -> MappingProxyType:
    return MappingProxyType({item.name: item for item in items})


def _promo_pool(root: Path, name: str, spec: dict, location: Location) -> model.PromoPool:
    generate, imported = spec.get("generate"), spec.get("import")
    uses = spec.get("max_uses", 1)
    common = dict(name=name, max_uses=None if uses == "unlimited" else int(uses), expires=_frozen(spec.get("expires")),
                  location=location, spec=spec)
    if imported is not None:
        path = Path(imported["file"])
        return model.PromoPool(source="import", file=path if path.is_absolute() else root / path, column=imported.get("column"), **common)
    from .promocodes import DEFAULT_ALPHABET, DEFAULT_LENGTH

    generate = generate or {}
    return model.PromoPool(
        source="generate", size=spec.get("size"), alphabet=generate.get("alphabet", DEFAULT_ALPHABET),
        length=int(generate.get("length", DEFAULT_LENGTH)), prefix=generate.get("prefix", ""), check=generate.get("check", "damm") != "none",
        **common,
    )


def _policies(spec: dict) -> model.Policies:
    defaults = model.Policies()
    quiet = spec.get("quiet_hours")
    return model.Policies(
        global_holdout=float(spec.get("global_holdout", defaults.global_holdout)),
        quiet_hours=(quiet["start"], quiet["end"]) if quiet else None,
        frequency_caps=tuple(model.FrequencyCap(cap.get("channel", "any"), int(cap["max"]), cap["per"]) for cap in spec.get("frequency_caps", ())),
        suppress_inactive_days=spec.get("suppress_inactive_days", defaults.suppress_inactive_days),
        drr_limits=MappingProxyType({**defaults.drr_limits, **(spec.get("drr_limits") or {})}),
        monthly_budget=spec.get("monthly_budget"),
    )


def _tracking(spec: dict | None) -> model.Tracking | None:
    if not spec:
        return None
    return model.Tracking(
        base_url=spec["base_url"].rstrip("/"),
        secret=spec["secret"],
        token_ttl=str(spec.get("token_ttl", model.Tracking.token_ttl)),
        links=MappingProxyType(dict(spec.get("links") or {})),
        unsubscribe_mailto=spec.get("unsubscribe_mailto"),
        webhook_secret=spec.get("webhook_secret"),
        spec=spec,
    )


def _step(spec: dict, location: Location) -> model.CascadeStep:
    templates = dict(spec.get("templates") or {})
    return model.CascadeStep(
        channel=spec.get("channel", "cheapest"),
        templates=MappingProxyType(templates),
        template=spec.get("template"),
        wait=str(spec.get("wait", "0")),
        condition=spec.get("if"),
        offer=spec.get("offer"),
        location=location,
    )


def _cascade(entry: Entry) -> model.Cascade:
    steps = tuple(_step(step, locate(entry.spec, ("steps", i))) for i, step in enumerate(entry.spec.get("steps", ())))
    return model.Cascade(entry.name, entry.location, entry.spec, steps=steps)


def _campaign(entry: Entry) -> model.Campaign:
    spec = entry.spec
    arms = tuple(model.Arm(arm["name"], float(arm.get("weight", 1)), arm.get("offer"), arm.get("delay")) for arm in spec.get("arms", ()))
    return model.Campaign(
        entry.name,
        entry.location,
        spec,
        kind=spec.get("kind", "broadcast"),
        audience=spec.get("audience", ""),
        exclude=tuple(spec.get("exclude", ())),
        cascade=spec.get("cascade"),
        message=_step(spec["message"], locate(spec, ("message",))) if "message" in spec else None,
        offer=spec.get("offer"),
        control=float(spec.get("control", 0)),
        arms=arms,
        on_change=spec.get("on_change", "continue"),
        priority=int(spec.get("priority", 50)),
        enabled=bool(spec.get("enabled", True)),
    )
