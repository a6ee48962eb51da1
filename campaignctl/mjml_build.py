"""MJML to HTML, once per template version: ``<mj-include>`` expanded by us (so
a template cannot read files outside the project, and cycles and missing files
are reported where the include is written), mjml-python's compilation, then
``<mj-style inline="inline">`` CSS inlined into style attributes with
css-inline, which mjml-python does not do. The Jinja in the result is left for
rendering per customer, so inlining protects it from the HTML parser."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .diagnostics import Diagnostic, Location

SyntaxCheck = Callable[[str], "tuple[int, str] | None"]  # Jinja source -> (line, message) of its first syntax error

INCLUDE = re.compile(r"<mj-include\b(?P<attrs>(?:[^>\"']|\"[^\"]*\"|'[^']*')*?)/?>(?:\s*</mj-include\s*>)?", re.I)
ATTRIBUTE = re.compile(r"""([\w:-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
INLINE_STYLE = re.compile(r"""<mj-style\b[^>]*\binline\s*=\s*["']inline["'][^>]*>(.*?)</mj-style\s*>""", re.I | re.S)
JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
MAX_INCLUDE_DEPTH = 16
INCLUDE_HINT = "mj-include paths are relative to the including file and must stay inside the project"


class MjmlBuildError(Exception):
    """The template cannot be compiled; ``diagnostics`` say where and why."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        super().__init__("; ".join(str(d) for d in diagnostics))


@dataclass
class _Expansion:
    root: Path
    display_root: str
    files: list[tuple[Path, str]] = field(default_factory=list)  # every file read with its text, the top one first
    diagnostics: list[Diagnostic] = field(default_factory=list)
    head: list[str] = field(default_factory=list)  # mj-head content the includes bring

    def shown(self, path: Path) -> str:
        name = os.path.relpath(path, self.root)
        return name if self.display_root in ("", ".") else f"{self.display_root}/{name}"


def build_html(path: Path, root: Path, display_root: str, syntax_error: SyntaxCheck) -> str:
    """The HTML of an MJML template with its Jinja intact; MjmlBuildError when
    an include, the Jinja syntax, MJML or the inlining fails."""
    expansion = _Expansion(root, display_root)
    text = _expand(path, expansion, ())
    problems = list(expansion.diagnostics)
    for file, source in expansion.files:
        error = syntax_error(source)
        if error:
            line, message = error
            problems.append(Diagnostic(Location(expansion.shown(file), line, 1), "mjml", f"template does not compile: {message}",
                                       "fix the Jinja syntax ({{ ... }}, {% ... %})"))
    if problems:
        raise MjmlBuildError(problems)
    text = _with_head(text, expansion.head)
    css = "\n".join(INLINE_STYLE.findall(text))
    where = Location(expansion.shown(path), 1, 1)
    if JINJA.search(css):
        raise MjmlBuildError([Diagnostic(where, "mjml", "Jinja inside <mj-style inline=\"inline\"> cannot be inlined",
                                         "inline styles are fixed per template: move personalised styles into attributes")])
    try:
        return _compile(INLINE_STYLE.sub("", text), css)
    except ValueError as exc:
        raise MjmlBuildError([Diagnostic(where, "mjml", f"MJML does not parse: {exc}",
                                         "check that every mj- tag is closed and nested as MJML requires")]) from exc
    except InliningError as exc:
        raise MjmlBuildError([Diagnostic(where, "mjml", f"CSS inlining failed: {exc}", "check the CSS of <mj-style inline=\"inline\">")]) from exc


@lru_cache(maxsize=128)
def _compile(mjml: str, css: str) -> str:
    """Cached by content: validate, plan and apply in one process compile each template version once."""
    from mjml import mjml2html  # imported on use: projects without e-mail stay fast

    html = mjml2html(mjml)
    return inline_css(html, css) if css.strip() else html


# --------------------------------------------------------------------------- mj-include


def _expand(path: Path, expansion: _Expansion, chain: tuple[Path, ...]) -> str:
    text = path.read_text("utf-8", errors="replace")
    expansion.files.append((path, text))
    chain = chain + (path,)

    def replace(match: re.Match) -> str:
        where = _location(expansion.shown(path), text, match.start())
        return _include(match.group("attrs"), where, path, expansion, chain)

    return INCLUDE.sub(replace, text)


def _include(attributes: str, where: Location, including: Path, expansion: _Expansion, chain: tuple[Path, ...]) -> str:
    attrs = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3) for m in ATTRIBUTE.finditer(attributes)}
    name = attrs.get("path", "")
    target = _resolve(name, where, including, expansion)
    if target is None:
        return ""
    if target in chain:
        cycle = " -> ".join(expansion.shown(p) for p in chain[chain.index(target):] + (target,))
        return _problem(expansion, where, f"mj-include cycle: {cycle}", "remove one of the includes so no file includes itself")
    if len(chain) >= MAX_INCLUDE_DEPTH:
        return _problem(expansion, where, f"mj-include nested deeper than {MAX_INCLUDE_DEPTH} files", "flatten the includes")
    kind = attrs.get("type", "mjml").lower()
    if kind == "css":
        inline = ' inline="inline"' if attrs.get("css-inline", "").lower() == "inline" else ""
        expansion.head.append(f"<mj-style{inline}>{target.read_text('utf-8', errors='replace')}</mj-style>")
        expansion.files.append((target, target.read_text("utf-8", errors="replace")))
        return ""
    if kind == "html":
        content = target.read_text("utf-8", errors="replace")
        expansion.files.append((target, content))
        return f"<mj-raw>{content}</mj-raw>"
    if kind != "mjml":
        return _problem(expansion, where, f"mj-include type {kind!r} is not one of mjml, css, html", "use type=\"css\" or type=\"html\", or none for MJML")
    return _body_of(_expand(target, expansion, chain), expansion)


def _resolve(name: str, where: Location, including: Path, expansion: _Expansion) -> Path | None:
    if not name:
        _problem(expansion, where, "mj-include has no path", "write <mj-include path=\"header.mjml\" />")
        return None
    if os.path.isabs(name) or name.startswith("~") or re.match(r"^[a-zA-Z][\w+.-]*:", name):
        _problem(expansion, where, f"mj-include path {name!r} is absolute", INCLUDE_HINT)
        return None
    target = Path(os.path.normpath(including.parent / name))
    if not _inside(target, expansion.root):
        _problem(expansion, where, f"mj-include path {name!r} leaves the project", INCLUDE_HINT)
        return None
    for candidate in (target, target.with_name(target.name + ".mjml")):  # MJML adds the extension when it is left out
        if candidate.is_file():
            if not _inside(Path(os.path.realpath(candidate)), Path(os.path.realpath(expansion.root))):
                _problem(expansion, where, f"mj-include path {name!r} is a link to a file outside the project", INCLUDE_HINT)
                return None
            return candidate
    _problem(expansion, where, f"mj-include file {name!r} does not exist", f"create {expansion.shown(target)} or fix the path")
    return None


def _inside(path: Path, root: Path) -> bool:
    root = Path(os.path.normpath(root))
    return path == root or root in path.parents


def _body_of(mjml: str, expansion: _Expansion) -> str:
    """An included file is a fragment, or a whole <mjml> document whose body
    takes the include's place and whose head joins the including head."""
    if not re.search(r"<mjml\b", mjml, re.I):
        return mjml
    head = re.search(r"<mj-head\b[^>]*>(.*?)</mj-head\s*>", mjml, re.I | re.S)
    if head:
        expansion.head.append(head.group(1))
    body = re.search(r"<mj-body\b[^>]*>(.*?)</mj-body\s*>", mjml, re.I | re.S)
    return body.group(1) if body else ""


def _with_head(mjml: str, head: list[str]) -> str:
    if not head:
        return mjml
    extra = "".join(head)
    close = re.search(r"</mj-head\s*>", mjml, re.I)
    if close:
        return mjml[: close.start()] + extra + mjml[close.start():]
    opening = re.search(r"<mjml\b[^>]*>", mjml, re.I)
    at = opening.end() if opening else 0
    return mjml[:at] + f"<mj-head>{extra}</mj-head>" + mjml[at:]


def _problem(expansion: _Expansion, where: Location, message: str, hint: str) -> str:
    expansion.diagnostics.append(Diagnostic(where, "mj-include", message, hint))
    return ""


def _location(shown: str, text: str, offset: int) -> Location:
    line = text.count("\n", 0, offset) + 1
    return Location(shown, line, offset - (text.rfind("\n", 0, offset) + 1) + 1)


# --------------------------------------------------------------------------- CSS inlining


class InliningError(Exception):
    """css-inline failed, or moved a Jinja tag so the template would change meaning."""


def inline_css(html: str, css: str) -> str:
    """``css`` applied to style attributes of ``html``; the Jinja tags survive.

    An HTML parser would move or escape them (``{% if a > b %}`` between table
    rows is foster-parented out of the table; ``>`` becomes ``&gt;``), so each is
    swapped for a stand-in the parser keeps in place: a comment in text, a
    plain word inside a tag or a title, and swapped back afterwards."""
    import css_inline

    protected, originals = _protect_jinja(html)
    inliner = css_inline.CSSInliner(
        inline_style_tags=False, keep_style_tags=True, keep_link_tags=True, load_remote_stylesheets=False, extra_css=css,
    )
    try:
        result = inliner.inline(protected)
    except (css_inline.InlineError, ValueError) as exc:
        raise InliningError(str(exc)) from exc
    return _restore_jinja(result, originals)


def _stand_in(n: int, salt: str) -> str:
    return f"jx{salt}n{n}z"


def _protect_jinja(html: str) -> tuple[str, dict[str, str]]:
    salt = hashlib.sha1(html.encode()).hexdigest()[:6]  # no template text contains it by chance
    out: list[str] = []
    prefix = ""
    originals: dict[str, str] = {}
    last = 0
    for n, match in enumerate(JINJA.finditer(html)):
        prefix += html[last:match.start()]
        last = match.end()
        context = _context_at(prefix)
        if context == "verbatim":  # comments, <style>, <script>: serialised as written
            prefix += match.group(0)
            continue
        token = _stand_in(n, salt)
        originals[token] = match.group(0)
        prefix += token if context in ("tag", "title") else f"<!--{token}-->"
    out.append(prefix + html[last:])
    return "".join(out), originals


def _context_at(prefix: str) -> str:
    lower = prefix.lower()
    if lower.rfind("<!--") > lower.rfind("-->"):
        return "verbatim"
    for element in ("style", "script"):
        if lower.rfind(f"<{element}") > lower.rfind(f"</{element}"):
            return "verbatim"
    for element in ("title", "textarea"):
        if lower.rfind(f"<{element}") > lower.rfind(f"</{element}"):
            return "title"
    tag_start = max((m.start() for m in re.finditer(r"<[a-zA-Z/]", prefix[max(0, lower.rfind(">")):])), default=-1)
    return "tag" if tag_start >= 0 else "text"


def _restore_jinja(html: str, originals: dict[str, str]) -> str:
    for token, original in originals.items():
        forms = (f"<!--{token}-->", f'{token}=""', token)
        found = [form for form in forms if form in html]
        if not found or html.count(found[0]) != 1:
            raise InliningError(f"the HTML parser moved the Jinja tag {original!r}; put it in <mj-raw> between whole elements")
        html = html.replace(found[0], original)
    return html
