"""The AMP for Email rules we can check ourselves, each error located file:line:col.

Not the whole validator (that is the npm package amphtml-validator, which the
tests run against these checks): the document shape every AMP e-mail needs
(``<html ⚡4email>``, ``<meta charset="utf-8">``, the runtime script, the
boilerplate style), what e-mail clients refuse (scripts, iframes, forms that
post away, external stylesheets, ``<img>``), extension scripts for the
components used, and the 75,000-byte CSS limit.

``source=True`` checks a template before rendering: attribute values that are
Jinja (``href="{{ links.cart }}"``) are known only per customer, so their URLs
are checked when the plan renders the template for real customers."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from .diagnostics import Diagnostic, Location

RUNTIME = "https://cdn.ampproject.org/v0.js"
EXTENSION_SRC = re.compile(r"^https://cdn\.ampproject\.org/v0/(amp-[a-z0-9-]+)-(\d+\.\d+)\.js$")
BOILERPLATE = "body{visibility:hidden}"
CSS_LIMIT = 75_000  # bytes of <style amp-custom> plus every style attribute
# Components AMP for Email allows; amp-img and amp-layout are built into the runtime.
BUILT_IN = frozenset({"amp-img", "amp-layout"})
EXTENSIONS = frozenset({
    "amp-accordion", "amp-anim", "amp-autocomplete", "amp-bind", "amp-carousel", "amp-date-picker", "amp-fit-text", "amp-form",
    "amp-image-lightbox", "amp-lightbox", "amp-list", "amp-mustache", "amp-selector", "amp-sidebar", "amp-timeago",
})
NEEDS_EXTENSION = {"amp-state": "amp-bind", "form": "amp-form"}  # tags whose extension has another name
DISALLOWED = {
    "iframe": "use a link to a page instead", "frame": "", "frameset": "", "object": "", "embed": "", "applet": "", "param": "",
    "base": "", "link": "AMP for Email allows no external stylesheet: put the CSS in <style amp-custom>",
    "img": "use <amp-img src=... width=... height=...></amp-img>", "video": "", "audio": "", "canvas": "", "noscript": "",
    "picture": "use <amp-img>", "input type=file": "", "input type=password": "", "input type=image": "",
}
HINT = "AMP for Email rules: https://amp.dev/documentation/guides-and-tutorials/learn/email-spec/amp-email-format"


def check_amp(html: str, shown: str, *, source: bool = False) -> list[Diagnostic]:
    """Every rule broken by ``html``, located in ``shown`` (the file it came from)."""
    checker = _AmpChecker(shown, source)
    checker.feed(html)
    checker.close()
    return checker.finish()


def _jinja(value: str | None) -> bool:
    return value is not None and ("{{" in value or "{%" in value)


class _AmpChecker(HTMLParser):
    def __init__(self, shown: str, source: bool):
        super().__init__(convert_charrefs=True)
        self.shown, self.source = shown, source
        self.problems: list[Diagnostic] = []
        self.doctype = self.html_tag = self.head = self.body = self.charset = self.runtime = self.boilerplate = False
        self.custom_css: list[tuple[Location, str]] = []
        self.inline_css_bytes = 0
        self.extensions: dict[str, Location] = {}
        self.used: dict[str, Location] = {}
        self.open_style: tuple[str, Location] | None = None  # which <style> we are inside
        self.in_template = 0  # inside <template type="amp-mustache">: {{mustache}} URLs are filled in by the client

    # -- parser callbacks

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.strip().lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        at = self._here()
        values = {name: value for name, value in attrs}
        check = getattr(self, f"_tag_{tag.replace('-', '_')}", None)
        if check:
            check(values, at)
        self._disallowed(tag, values, at)
        if tag.startswith("amp-") and tag not in BUILT_IN:
            self.used.setdefault(NEEDS_EXTENSION.get(tag, tag), at)
        elif tag in NEEDS_EXTENSION:
            self.used.setdefault(NEEDS_EXTENSION[tag], at)
        for name, value in attrs:
            self._attribute(tag, name, value, at)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self.open_style = None
        elif tag == "template":
            self.in_template = max(0, self.in_template - 1)

    def handle_data(self, data: str) -> None:
        if self.open_style is None:
            return
        kind, at = self.open_style
        if kind == "boilerplate":
            self.boilerplate = self.boilerplate or data.strip() == BOILERPLATE
            if data.strip() != BOILERPLATE:
                self._error(at, f"the amp4email-boilerplate style must be exactly {BOILERPLATE!r}")
        elif kind == "custom":
            self.custom_css.append((at, data))

    # -- one tag each

    def _tag_html(self, values: dict, at: Location) -> None:
        self.html_tag = True
        if "⚡4email" not in values and "amp4email" not in values:
            self._error(at, "<html> must carry the ⚡4email (or amp4email) attribute")

    def _tag_head(self, values: dict, at: Location) -> None:
        self.head = True

    def _tag_body(self, values: dict, at: Location) -> None:
        self.body = True

    def _tag_meta(self, values: dict, at: Location) -> None:
        if "charset" in values:
            self.charset = (values["charset"] or "").lower() == "utf-8"
            if not self.charset:
                self._error(at, 'the charset must be utf-8: <meta charset="utf-8">')

    def _tag_script(self, values: dict, at: Location) -> None:
        src = values.get("src") or ""
        if src == RUNTIME and not {"custom-element", "custom-template"} & set(values):
            self.runtime = True
            if "async" not in values:
                self._error(at, "the AMP runtime script must be async")
            return
        name = values.get("custom-element") or values.get("custom-template")
        match = EXTENSION_SRC.match(src)
        if not name or not match:
            self._error(at, "scripts are not allowed in AMP e-mails, except the AMP runtime and AMP extension scripts",
                        "remove it; interactivity comes from AMP components such as amp-bind, amp-form, amp-selector")
            return
        if match.group(1) != name:
            self._error(at, f"the script for {name} loads {match.group(1)}")
        if name not in EXTENSIONS:
            self._error(at, f"{name} is not allowed in AMP e-mails", "use one of: " + ", ".join(sorted(EXTENSIONS)))
        if "async" not in values:
            self._error(at, f"the {name} script must be async")
        self.extensions[name] = at

    def _tag_style(self, values: dict, at: Location) -> None:
        if "amp4email-boilerplate" in values:
            self.open_style = ("boilerplate", at)
        elif "amp-custom" in values:
            if self.custom_css:
                self._error(at, "only one <style amp-custom> is allowed", "merge the stylesheets")
            self.open_style = ("custom", at)
        else:
            self.open_style = ("other", at)
            self._error(at, "a <style> must be <style amp-custom> (one per document) or the amp4email-boilerplate")

    def _tag_form(self, values: dict, at: Location) -> None:
        if "action" in values or "action-xhr" not in values:
            self._error(at, "a form in an AMP e-mail must submit with action-xhr (no action)", "write <form method=\"post\" action-xhr=\"https://...\">")

    def _tag_template(self, values: dict, at: Location) -> None:
        self.in_template += 1
        if values.get("type") != "amp-mustache":
            self._error(at, '<template> must be type="amp-mustache"')
        else:
            self.used.setdefault("amp-mustache", at)

    def _disallowed(self, tag: str, values: dict, at: Location) -> None:
        key = f"input type={(values.get('type') or '').lower()}" if tag == "input" else tag
        if key in DISALLOWED:
            self._error(at, f"<{key}> is not allowed in AMP e-mails", DISALLOWED[key] or HINT)

    def _attribute(self, tag: str, name: str, value: str | None, at: Location) -> None:
        if name.startswith("on") and name != "on":
            self._error(at, f"the event handler attribute {name} is not allowed", "use the on=\"tap:...\" action attribute")
        elif name == "style" and value:
            self.inline_css_bytes += len(value.encode())
        elif name in ("href", "src", "action-xhr", "srcset") and value is not None and not self.in_template \
                and not (self.source and _jinja(value)):
            self._url(tag, name, value.strip(), at)

    def _url(self, tag: str, name: str, value: str, at: Location) -> None:
        if value.lower().startswith("javascript:"):
            self._error(at, f"a javascript: URL in {tag} {name} is not allowed")
        elif tag == "a" and name == "href":
            if not re.match(r"^(https?|mailto|tel|sms):", value, re.I):
                self._error(at, f"the relative URL {value!r} in <a href> is not allowed in AMP e-mails", "use an absolute https:// URL")
        elif name in ("src", "action-xhr") and tag != "script" and not value.lower().startswith("https://"):
            self._error(at, f"{tag} {name} must be an absolute https:// URL, not {value!r}")

    # -- the whole document

    def finish(self) -> list[Diagnostic]:
        top = Location(self.shown, 1, 1)
        required = [
            (self.doctype, "the document must start with <!doctype html>"),
            (self.html_tag, "the document has no <html ⚡4email> tag"),
            (self.head, "the document has no <head>"),
            (self.body, "the document has no <body>"),
            (self.charset, 'the <head> needs <meta charset="utf-8">'),
            (self.runtime, f'the <head> needs the AMP runtime <script async src="{RUNTIME}"></script>'),
            (self.boilerplate, f"the <head> needs <style amp4email-boilerplate>{BOILERPLATE}</style>"),
        ]
        for present, message in required:
            if not present:
                self._error(top, message)
        for name, at in sorted(self.used.items()):
            if name not in self.extensions and name in EXTENSIONS:
                kind = "custom-template" if name == "amp-mustache" else "custom-element"
                self._error(at, f"{name} is used but its script is missing",
                            f'add <script async {kind}="{name}" src="https://cdn.ampproject.org/v0/{name}-0.1.js"></script>')
            elif name not in EXTENSIONS:
                self._error(at, f"<{name}> is not allowed in AMP e-mails", "use one of: " + ", ".join(sorted(EXTENSIONS)))
        self._css()
        return sorted(self.problems, key=lambda d: d.location)

    def _css(self) -> None:
        total = self.inline_css_bytes
        for at, css in self.custom_css:
            total += len(css.encode())
            for pattern, message in ((r"!\s*important", "!important is not allowed in AMP CSS"),
                                     (r"@import\b", "@import is not allowed in AMP e-mails")):
                for match in re.finditer(pattern, css, re.I):
                    line = at.line + css.count("\n", 0, match.start())
                    self._error(Location(self.shown, line, 1), message)
        if total > CSS_LIMIT:
            where = self.custom_css[0][0] if self.custom_css else Location(self.shown, 1, 1)
            self._error(where, f"the CSS is {total:,} bytes (<style amp-custom> and style attributes); the limit is {CSS_LIMIT:,}",
                        "remove unused rules")

    def _here(self) -> Location:
        line, offset = self.getpos()
        return Location(self.shown, line, offset + 1)

    def _error(self, at: Location, message: str, hint: str = HINT) -> None:
        self.problems.append(Diagnostic(at, "amp", message, hint))
