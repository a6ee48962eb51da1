"""Templates: sandboxed Jinja2 with StrictUndefined (a missing variable fails
the plan instead of mailing "Hello, !" to a million people), MJML compiled to
HTML once per template version (campaignctl.mjml_build: mj-include, CSS
inlining), AMP parts checked against the AMP for Email rules (campaignctl.amp).

The sandbox also bounds what a template can make the renderer do: loops,
string repetition, powers, padding widths and the size of a rendered part, so
a template cannot hang or exhaust the machine that sends a million e-mails."""

from __future__ import annotations

import math
import os
import re
import threading
from contextvars import ContextVar
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from .diagnostics import Diagnostic, Location
from .loader import locate

# Parts that name a file relative to the project, and parts written inline.
FILE_PARTS = ("mjml", "amp", "html", "text")
INLINE_PARTS = ("subject", "preheader", "body", "title", "url", "button")


HEADER_PARTS = ("subject",)  # become mail headers: a line break in them would start a new header
ONE_LINE_PARTS = ("subject", "preheader", "title", "button", "url")

# Limits far above any real e-mail, far below what hurts the sender.
MAX_LOOP_ITERATIONS = 100_000  # per rendered part, nested loops counted together
MAX_SEQUENCE = 1_000_000  # items or characters a `*` may produce
MAX_POWER_BITS = 4096  # size of the result of `**`
MAX_WIDTH = 10_000  # padding widths in "%5d", "{:>5}", center(), indent()...
MAX_PART_CHARACTERS = 5_000_000  # one rendered part
RENDER_BLOCK = 64  # chunks of output between size checks

_DICT_ATTRIBUTES = frozenset(dir(dict))
_loop_budget: ContextVar[list[int] | None] = ContextVar("campaignctl_loop_budget", default=None)


class CampaignSandbox(SandboxedEnvironment):
    """Jinja's sandbox (no ``__class__``, ``__globals__``, ``mro`` ... , unsafe
    ``str.format`` fields blocked) plus resource limits on what it lets through."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.globals.pop("lipsum", None)  # lipsum(n=10**9) would write forever
        self.filters["_loop_budget"] = _counted
        for name in ("center", "indent", "batch", "slice", "wordwrap"):
            self.filters[name] = _bounded_filter(self.filters[name])
        self.filters["format"] = _bounded_format(self.filters["format"])

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):  # every {% for %} draws on one budget per render
            loop.iter = nodes.Filter(loop.iter, "_loop_budget", [], [], None, None, lineno=loop.lineno)
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_format_widths(left)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # customer.first_name on a plain dict: Jinja tries getattr() first and
        # lands here through an AttributeError, ~1 µs a lookup, dozens per
        # e-mail. Same answer without the exception.
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_widths(value.__self__)
        return wrapped


def _check_repeat(sequence: Any, times: Any) -> None:
    if isinstance(sequence, (str, list, tuple)) and isinstance(times, int) and len(sequence) * times > MAX_SEQUENCE:
        raise SecurityError(f"repeating a sequence to more than {MAX_SEQUENCE:,} items is not allowed in templates")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, (int, float)) and isinstance(exponent, (int, float)) and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_POWER_BITS:
            raise SecurityError("a power this large is not allowed in templates")


_WIDTHS = re.compile(r"%[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?|\{[^{}]*:[^{}]*?(\{|\d+)")


def _check_format_widths(fmt: str) -> None:
    for match in _WIDTHS.finditer(fmt):
        for width in match.groups():
            if width in ("*", "{") or (width and int(width) > MAX_WIDTH):
                raise SecurityError(f"format widths above {MAX_WIDTH:,} (or taken from arguments) are not allowed in templates")


def _bounded_filter(original: Any) -> Any:
    """A filter whose size arguments (widths, counts) are bounded like ``*``."""

    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in list(args[1:]) + list(kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WIDTH:
                raise SecurityError(f"{original.__name__.removeprefix('do_')}() with {value:,} is beyond the template limit {MAX_WIDTH:,}")
        return original(*args, **kwargs)

    return _like(bounded, original)


def _bounded_format(original: Any) -> Any:
    """``"%5d"|format(n)``: the format string is bounded like ``%``."""

    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            _check_format_widths(value)
        return original(value, *args, **kwargs)

    return _like(bounded, original)


def _like(wrapper: Any, original: Any) -> Any:
    if hasattr(original, "jinja_pass_arg"):  # keep pass_context/pass_eval_context on the wrapper
        wrapper.jinja_pass_arg = original.jinja_pass_arg
    wrapper.__name__ = original.__name__
    return wrapper


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _loop_budget.get()
    for item in iterable:
        if budget is not None:
            budget[0] -= 1
            if budget[0] < 0:
                raise SecurityError(f"the template loops more than {MAX_LOOP_ITERATIONS:,} times")
        yield item


@lru_cache(maxsize=2)
def environment(autoescape: bool) -> CampaignSandbox:
    return CampaignSandbox(undefined=jinja2.StrictUndefined, autoescape=autoescape, keep_trailing_newline=True)


def render_bounded(template: jinja2.Template, context: dict[str, Any]) -> str:
    """``template.render(context)`` within the loop budget and the part size limit."""
    token = _loop_budget.set([MAX_LOOP_ITERATIONS])
    try:
        # root_render_func rather than generate(): one generator layer less per chunk, and every
        # exception is turned into a RenderError by the caller anyway. The size is checked per
        # block of chunks (C loops, not Python ones per chunk): a block is at most
        # RENDER_BLOCK x MAX_SEQUENCE characters.
        chunks = template.root_render_func(template.new_context(context))
        parts, size = [], 0
        while block := list(islice(chunks, RENDER_BLOCK)):
            size += sum(map(len, block))
            if size > MAX_PART_CHARACTERS:
                raise SecurityError(f"the rendered part is longer than {MAX_PART_CHARACTERS:,} characters")
            parts.append("".join(block))
        return "".join(parts)
    finally:
        _loop_budget.reset(token)


def one_line(text: str) -> str:
    """Header and one-line parts: line breaks and control characters become
    spaces, so a customer field cannot add a header ("Hi\r\nBcc: ...")."""
    return re.sub(r"[\x00-\x1f\x7f\x85\u2028\u2029]+", " ", text).strip()


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
        if part == "mjml":
            diagnostics += _mjml_problems(path, root, display_root)
            continue
        text = path.read_text("utf-8", errors="replace")
        error = _jinja_error(text)
        if error:
            line, message = error
            diagnostics.append(Diagnostic(Location(shown, line, 1), part, f"template does not compile: {message}", "fix the Jinja syntax ({{ ... }}, {% ... %})"))
        elif part == "amp":
            from .amp import check_amp

            diagnostics += check_amp(text, shown, source=True)
    return diagnostics


def _mjml_problems(path: Path, root: Path, display_root: str) -> list[Diagnostic]:
    """Includes, Jinja syntax of every file, MJML and inlining: compiling is the check."""
    from .mjml_build import MjmlBuildError, build_html

    try:
        build_html(path, root, display_root, _jinja_error)
    except MjmlBuildError as exc:
        return exc.diagnostics
    return []


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


# --------------------------------------------------------------------------- rendering

HTML_PARTS = frozenset({"html", "amp"})  # autoescaped: customer fields never become markup
LINK_BASE = "https://links.invalid"  # stands in for the tracking endpoint of `campaignctl serve`


# What a template can raise for one customer's data: nothing of it may escape as a crash.
RENDER_FAILURES = (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError, RecursionError)


class RenderError(Exception):
    """A template could not be rendered for one customer (a missing variable, a
    sandbox violation) or compiled (a broken include). ``file`` is the template
    file at fault, ``reason`` what went wrong."""

    def __init__(self, template: str, reason: str, file: str | None = None, part: str | None = None):
        self.template, self.reason, self.file, self.part = template, reason, file, part
        where = f" ({file})" if file else ""
        super().__init__(f"template {template!r}{where}: {reason}")


class Links:
    """``{{ links.cart }}``: a link per name, carrying the message key so a click
    can be attributed. Without ``resolve`` any name works (a placeholder under
    ``base``); with it (campaignctl.tracking), ``resolve(name)`` makes the URL,
    signed and only for configured names, when the template asks for it."""

    def __init__(self, message_key: str, base: str = LINK_BASE, *, resolve: Any = None):
        self._key = message_key
        self._base = base
        self._resolve = resolve  # (name) -> URL; raises ValueError for a name it does not know

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._resolve is not None:
            return self._resolve(name)  # a ValueError reaches MessageRenderer.render: a RenderError naming the link
        return f"{self._base}/{name}?m={self._key}"


class MessageRenderer:
    """Renders a project's templates: MJML is compiled to HTML once per template
    and every part's Jinja is compiled once, then personalised per customer."""

    def __init__(self, project: Any):
        self._project = project
        self._compiled: dict[str, dict[str, jinja2.Template]] = {}
        self._sources: dict[str, dict[str, str]] = {}  # template -> part -> the file it came from, for errors
        self._trees: dict[tuple[str, str], nodes.Template] = {}

    def parts(self, template_name: str) -> dict[str, jinja2.Template]:
        if template_name not in self._compiled:
            self._compiled[template_name] = self._compile(self._project.templates[template_name])
        return self._compiled[template_name]

    def prepare(self, template_names: Iterable[str], stop: threading.Event | None = None) -> None:
        """Compile the templates and parse their parts now, so that rendering
        later does not wait for it; stop early when ``stop`` is set (the rest
        compile when used). A template that does not compile is left for
        :meth:`parts` to report when it is used."""
        for name in template_names:
            if stop is not None and stop.is_set():
                return
            try:
                for part in self.parts(name):
                    self.syntax_tree(name, part)
            except RenderError:
                continue

    def source_file(self, template_name: str, part: str) -> str | None:
        """The project-relative file a part comes from (``html`` of an MJML template: the .mjml)."""
        self.parts(template_name)
        return self._sources[template_name].get(part)

    def reads(self, template_name: str, variable: str) -> bool:
        """Whether any part of the template may read the context ``variable``
        (templates include no other files, so each part's syntax tree shows
        all it reads). True for a template that does not compile: its caller
        cannot rule anything out, and rendering reports the error. Any load
        of the name counts, even of one the template sets itself: safe, and
        ~5x cheaper than jinja2.meta.find_undeclared_variables, which runs
        the code generator (~50 ms for a plan's templates)."""
        try:
            parts = self.parts(template_name)
        except RenderError:
            return True
        return any(name.name == variable and name.ctx == "load"
                   for part in parts for name in self.syntax_tree(template_name, part).find_all(nodes.Name))

    def syntax_tree(self, template_name: str, part: str) -> nodes.Template:
        """A part's Jinja syntax tree: the one it was compiled from (the checks that read it share it)."""
        self.parts(template_name)
        return self._trees[(template_name, part)]

    def _compile(self, template: Any) -> dict[str, jinja2.Template]:
        root = Path(self._project.root)
        sources: dict[str, str] = {}
        files: dict[str, str] = {}
        for part in INLINE_PARTS:
            if isinstance(template.spec.get(part), str):
                sources[part] = template.spec[part]
                files[part] = f"{template.location.file}:{template.location.line}" if getattr(template, "location", None) else ""
        for part, path in template.files.items():
            shown = os.path.relpath(path, root)
            if part == "mjml":
                sources["html"], files["html"] = self._mjml_html(template.name, path, root), shown
            else:
                sources[part], files[part] = path.read_text("utf-8"), shown
        if "html" in sources and "text" not in sources:
            derived = text_template(sources["html"])
            if derived is not None:  # else html_to_text per recipient
                sources["text"], files["text"] = derived, files["html"]
        self._sources[template.name] = files
        compiled = {}
        for part, text in sources.items():
            try:
                # Parsed once, compiled from the tree, which the checks read too
                # (syntax_tree): parsing is most of compiling a part.
                env = environment(part in HTML_PARTS)
                tree = env.parse(text)
                compiled[part] = env.from_string(tree)
                compiled[part].campaignctl_derived = part == "text" and "text" not in template.files
            except jinja2.TemplateSyntaxError as exc:
                raise RenderError(template.name, f"line {exc.lineno}: {exc.message}", files.get(part), part) from exc
            self._trees[(template.name, part)] = tree
        return compiled

    @staticmethod
    def _mjml_html(name: str, path: Path, root: Path) -> str:
        from .mjml_build import MjmlBuildError, build_html

        try:
            return build_html(path, root, ".", _jinja_error)
        except MjmlBuildError as exc:
            raise RenderError(name, "; ".join(str(d) for d in exc.diagnostics), os.path.relpath(path, root), "html") from exc

    def render(self, template_name: str, context: dict[str, Any]) -> dict[str, str]:
        parts = self.parts(template_name)
        # Short parts first: the body may show them ({{ preheader }} in MJML).
        rendered = {part: self._render_part(template_name, part, parts[part], context) for part in INLINE_PARTS if part in parts}
        for part in ONE_LINE_PARTS:
            if part in rendered:
                rendered[part] = one_line(rendered[part])
        body_context = {**context, **rendered}
        for part, template in parts.items():
            if part not in rendered:
                rendered[part] = self._render_part(template_name, part, template, body_context)
        if "html" in rendered and "text" not in rendered:
            rendered["text"] = html_to_text(rendered["html"])
        elif "text" in rendered and getattr(parts["text"], "campaignctl_derived", False):
            rendered["text"] = _tidy_text(rendered["text"])
        return rendered

    def _render_part(self, template_name: str, part: str, template: jinja2.Template, context: dict[str, Any]) -> str:
        try:
            return render_bounded(template, context)
        except RENDER_FAILURES as exc:
            reason = exc.message if isinstance(exc, jinja2.TemplateError) and exc.message else str(exc) or type(exc).__name__
            raise RenderError(template_name, f"{part}: {reason}", self._sources[template_name].get(part), part) from exc


def html_to_text(html: str) -> str:
    """A plain-text alternative: visible text and link targets, blank lines collapsed."""
    import html as html_lib

    body = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", "", html)
    body = re.sub(r'(?is)<a\b[^>]*href="([^"]*)"[^>]*>(.*?)</a>', lambda m: f"{m.group(2)} ({m.group(1)})", body)
    body = re.sub(r"(?i)<br\s*/?>|</(p|div|tr|h[1-6]|li)>", "\n", body)
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", body))
    return _tidy_text(text)


def _tidy_text(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def text_template(html: str) -> str | None:
    """The text part as a template, made once from the HTML template: html_to_text
    with the Jinja kept, so each recipient costs a Jinja render, not HTML parsing
    (the regexes were 40% of rendering time). None when a Jinja statement would
    be lost with the markup around it; the text is then made per recipient."""
    originals: dict[str, str] = {}

    def stand_in(match: re.Match) -> str:
        token = f"jinjatext{len(originals)}x"
        originals[token] = match.group(0)
        return token

    text = html_to_text(_JINJA.sub(stand_in, html))
    kept = re.findall(r"jinjatext\d+x", text)
    statements = [token for token, original in originals.items() if original.startswith("{%")]
    if [token for token in kept if originals[token].startswith("{%")] != statements:
        return None
    return re.sub(r"jinjatext\d+x", lambda m: originals[m.group(0)], text)
