"""Templates: sandboxed Jinja2 with StrictUndefined (a missing variable fails
the plan instead of mailing "Hello, !" to a million people), MJML compiled by
mjml-python."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from .diagnostics import Diagnostic, Location
from .loader import locate

# Parts that name a file relative to the project, and parts written inline.
FILE_PARTS = ("mjml", "amp", "html", "text")
INLINE_PARTS = ("subject", "preheader", "body", "title", "url", "button")


@lru_cache(maxsize=2)
def environment(autoescape: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=autoescape, keep_trailing_newline=True)


def file_parts(spec: Any) -> dict[str, tuple[tuple, str]]:
    """part -> (path inside the spec, relative file name) for every part kept in a
    file: mjml/amp/html/text always, inline parts when written as {file: ...}."""
    if not isinstance(spec, dict):
        return {}
    found = {part: ((part,), spec[part]) for part in FILE_PARTS if isinstance(spec.get(part), str)}
    for part in INLINE_PARTS:
        value = spec.get(part)
        if isinstance(value, dict) and isinstance(value.get("file"), str):
            found[part] = ((part, "file"), value["file"])
    return found


def template_files(spec: Any, root: Path) -> dict[str, Path]:
    """The files a template definition names, resolved inside the project."""
    return {part: root / name for part, (_, name) in file_parts(spec).items()}


def check_template(spec: Any, root: Path, display_root: str) -> list[Diagnostic]:
    """Missing files, files outside the project, Jinja syntax errors and MJML parse errors."""
    diagnostics: list[Diagnostic] = []
    if not isinstance(spec, dict):
        return diagnostics
    for part in INLINE_PARTS:
        text = spec.get(part)
        if isinstance(text, str):
            error = _jinja_error(text)
            if error:
                line, message = error
                base = locate(spec, (part,))
                diagnostics.append(Diagnostic(base, part, f"template does not compile: {message}", "fix the Jinja syntax ({{ ... }}, {% ... %})"))
    for part, (spec_path, name) in file_parts(spec).items():
        path = root / name
        shown = f"{display_root}/{name}" if display_root not in ("", ".") else name
        if not _inside(root, name):
            diagnostics.append(Diagnostic(locate(spec, spec_path), part, f"{name!r} is outside the project", "keep template files inside the project directory"))
            continue
        if not path.is_file():
            diagnostics.append(Diagnostic(locate(spec, spec_path), part, f"template file {name!r} does not exist", "create it or fix the path (relative to the project directory)"))
            continue
        text = path.read_text("utf-8", errors="replace")
        error = _jinja_error(text)
        if error:
            line, message = error
            diagnostics.append(Diagnostic(Location(shown, line, 1), part, f"template does not compile: {message}", "fix the Jinja syntax ({{ ... }}, {% ... %})"))
        elif part == "mjml":
            mjml_error = _mjml_error(text)
            if mjml_error:
                diagnostics.append(Diagnostic(Location(shown, 1, 1), "mjml", f"MJML does not parse: {mjml_error}", "check that every mj- tag is closed and nested as MJML requires"))
    return diagnostics


def _inside(root: Path, name: str) -> bool:
    """A relative path that stays inside the project (no absolute paths, no '..' out of it)."""
    normal = os.path.normpath(name)
    return not os.path.isabs(normal) and normal != ".." and not normal.startswith(".." + os.sep)


def _jinja_error(text: str) -> tuple[int, str] | None:
    try:
        environment(False).parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return exc.lineno or 1, exc.message or "syntax error"
    return None


def _mjml_error(text: str) -> str | None:
    from mjml import mjml2html  # imported on use: validation of projects without e-mail stays fast

    try:
        mjml2html(text)
    except ValueError as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------- rendering

HTML_PARTS = frozenset({"html", "amp"})  # autoescaped: customer fields never become markup
LINK_BASE = "https://links.invalid"  # stands in for the tracking endpoint of `campaignctl serve`


class RenderError(Exception):
    """A template could not be rendered for one customer (a missing variable, a sandbox violation)."""


class Links:
    """``{{ links.cart }}``: a link per name, carrying the message key so a click
    can be attributed. Any name works, so templates may add their own."""

    def __init__(self, message_key: str, base: str = LINK_BASE):
        self._key = message_key
        self._base = base

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return f"{self._base}/{name}?m={self._key}"


class MessageRenderer:
    """Renders a project's templates: MJML is compiled to HTML once per template
    and every part's Jinja is compiled once, then personalised per customer."""

    def __init__(self, project: Any):
        self._project = project
        self._compiled: dict[str, dict[str, jinja2.Template]] = {}

    def parts(self, template_name: str) -> dict[str, jinja2.Template]:
        if template_name not in self._compiled:
            self._compiled[template_name] = self._compile(self._project.templates[template_name])
        return self._compiled[template_name]

    def _compile(self, template: Any) -> dict[str, jinja2.Template]:
        sources: dict[str, str] = {}
        for part in INLINE_PARTS:
            if isinstance(template.spec.get(part), str):
                sources[part] = template.spec[part]
        for part, path in template.files.items():
            sources[part] = path.read_text("utf-8")
        if "mjml" in sources:
            from mjml import mjml2html

            sources["html"] = mjml2html(sources.pop("mjml"))
        return {part: environment(part in HTML_PARTS).from_string(text) for part, text in sources.items()}

    def render(self, template_name: str, context: dict[str, Any]) -> dict[str, str]:
        parts = self.parts(template_name)
        try:
            # Short parts first: the body may show them ({{ preheader }} in MJML).
            rendered = {part: parts[part].render(context) for part in INLINE_PARTS if part in parts}
            body_context = {**context, **rendered}
            rendered.update({part: template.render(body_context) for part, template in parts.items() if part not in rendered})
        except (jinja2.UndefinedError, jinja2.exceptions.SecurityError, TypeError, ValueError) as exc:
            raise RenderError(f"template {template_name!r}: {exc}") from exc
        if "html" in rendered and "text" not in rendered:
            rendered["text"] = html_to_text(rendered["html"])
        return rendered


def html_to_text(html: str) -> str:
    """A plain-text alternative: visible text and link targets, blank lines collapsed."""
    import html as html_lib
    import re

    body = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", "", html)
    body = re.sub(r'(?is)<a\b[^>]*href="([^"]*)"[^>]*>(.*?)</a>', lambda m: f"{m.group(2)} ({m.group(1)})", body)
    body = re.sub(r"(?i)<br\s*/?>|</(p|div|tr|h[1-6]|li)>", "\n", body)
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", body))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
