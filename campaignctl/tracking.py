"""Tracked links for rendered messages: per message, ``{{ links.NAME }}``, the
unsubscribe URL, the open pixel and the List-Unsubscribe pair, signed with
campaignctl.tokens and answered by campaignctl.serve.

Without a ``tracking:`` section every link is a placeholder (links.invalid).
With one but with its secret unset (a demo, a laptop), links fall back to the
same placeholders and e-mails carry no List-Unsubscribe: ``plan`` and ``apply``
say so with a located warning rather than refuse, so the example project runs
with no environment set up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from .diagnostics import Diagnostic, Location, ProjectError, display_path
from .loader import locate
from .model import Project, Tracking
from .secrets import ENV_REFERENCE, resolve
from .templates import LINK_BASE, Links
from .tokens import TokenSigner

MIN_TOKEN_TTL = timedelta(days=30)  # CAN-SPAM: an unsubscribe must keep working 30 days after sending
UNSUBSCRIBE = "unsubscribe"  # the built-in link name


@dataclass(frozen=True)
class MessageLinks:
    """What one message's templates and sender get."""

    links: Links
    unsubscribe_url: str
    open_pixel_url: str
    list_unsubscribe: tuple[str, ...] = ()  # (https one-click URL, mailto:...); empty: no header


def placeholder_links(message_key: str, names: frozenset[str] | None = None) -> MessageLinks:
    """Untracked stand-ins carrying the message key (no tracking, or no secret)."""

    def placeholder(name: str) -> str:
        if names is not None and name != UNSUBSCRIBE and name not in names:
            raise ValueError(_unknown_link(name, names))
        return f"{LINK_BASE}/{name}?m={message_key}"

    return MessageLinks(Links(message_key, resolve=placeholder), placeholder(UNSUBSCRIBE), f"{LINK_BASE}/open.gif?m={message_key}")


def _unknown_link(name: str, names: frozenset[str]) -> str:
    known = ", ".join(sorted(names | {UNSUBSCRIBE}))
    return f"unknown link {name!r} (links: {known}); add it to tracking.links in campaignctl.yaml"


class Tracker:
    """Makes each message's links: signed when tracking is configured and its
    secret is set, placeholders otherwise."""

    def __init__(self, tracking: Tracking | None, signer: TokenSigner | None):
        self._tracking = tracking
        self._signer = signer
        self._names = frozenset(tracking.links) if tracking else None

    @classmethod
    def for_project(cls, project: Project, environ: Mapping[str, str] | None = None) -> Tracker:
        tracking = project.tracking
        if tracking is None or secret_missing(tracking, _environ(environ)):
            return cls(tracking, None)
        return cls(tracking, open_signer(project, environ))

    @property
    def signs(self) -> bool:
        return self._signer is not None

    def for_message(self, message_key: str, now: datetime) -> MessageLinks:
        if self._signer is None or self._tracking is None:
            return placeholder_links(message_key, self._names)
        tracking, sign = self._tracking, self._signer.sign
        expires = now + token_ttl(tracking)
        unsubscribe_token = sign("unsubscribe", message_key, expires)
        unsubscribe_url = f"{tracking.base_url}/u/{unsubscribe_token}"

        def tracked(name: str) -> str:
            if name == UNSUBSCRIBE:
                return unsubscribe_url
            if name not in tracking.links:
                raise ValueError(_unknown_link(name, self._names or frozenset()))
            return f"{tracking.base_url}/c/{sign('click', message_key, expires, tracking.links[name])}"

        list_unsubscribe = (unsubscribe_url,)
        if tracking.unsubscribe_mailto:
            list_unsubscribe += (f"mailto:{tracking.unsubscribe_mailto}?subject=unsubscribe-{unsubscribe_token}",)
        open_url = f"{tracking.base_url}/o/{sign('open', message_key, expires)}.gif"
        return MessageLinks(Links(message_key, resolve=tracked), unsubscribe_url, open_url, list_unsubscribe)


# --------------------------------------------------------------------------- secrets


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    import os

    return os.environ if environ is None else environ


def secret_missing(tracking: Tracking, environ: Mapping[str, str]) -> bool:
    return any(name not in environ or not environ[name] for name in ENV_REFERENCE.findall(tracking.secret))


def _resolve_secret(tracking: Tracking, field: str, environ: Mapping[str, str] | None) -> str:
    """A secret's value; ProjectError located at the reference when it is unset or empty."""
    environ = _environ(environ)
    value, problems = resolve({field: getattr(tracking, field)}, environ, where=tracking.spec)
    if not problems and not value[field]:
        problems = [Diagnostic(locate(tracking.spec, (field,)), "secret", f"tracking.{field} is empty", "set the variable to a long random value")]
    if problems:
        raise ProjectError(problems)
    return value[field]


def open_signer(project: Project, environ: Mapping[str, str] | None = None) -> TokenSigner:
    """The token signer of the project (tracking.secret resolved now)."""
    if project.tracking is None:
        raise ProjectError([Diagnostic(Location(project.files[0] if project.files else "campaignctl.yaml", 1, 1), "tracking",
                                       "the project has no tracking section", "add tracking: {base_url, secret} (docs/tracking.md)")])
    return TokenSigner(_resolve_secret(project.tracking, "secret", environ))


def webhook_secret(project: Project, environ: Mapping[str, str] | None = None) -> bytes | None:
    """tracking.webhook_secret resolved, or None when the project sets none."""
    if project.tracking is None or project.tracking.webhook_secret is None:
        return None
    return _resolve_secret(project.tracking, "webhook_secret", environ).encode("utf-8")


def token_ttl(tracking: Tracking) -> timedelta:
    from .segments.periods import parse_duration

    return parse_duration(tracking.token_ttl)


# --------------------------------------------------------------------------- checks


def tracking_warnings(project: Project, environ: Mapping[str, str] | None = None) -> list[Diagnostic]:
    """What plan and apply warn about: tracking configured, its secret not set."""
    tracking = project.tracking
    if tracking is None or not secret_missing(tracking, _environ(environ)):
        return []
    names = ", ".join(ENV_REFERENCE.findall(tracking.secret))
    return [Diagnostic(
        locate(tracking.spec, ("secret",)), "tracking.secret",
        f"{names} is not set: links render as untracked placeholders (links.invalid) and e-mails carry no List-Unsubscribe",
        f"export {names}=... where apply and serve run; see docs/tracking.md", severity="warning",
    )]


def check_tracking(project: Project) -> list[Diagnostic]:
    """What the schema cannot say: the TTL is long enough, and every
    ``{{ links.NAME }}`` in a template names a configured link."""
    tracking = project.tracking
    if tracking is None:
        return []
    problems = []
    if token_ttl(tracking) < MIN_TOKEN_TTL:
        problems.append(Diagnostic(locate(tracking.spec, ("token_ttl",)), "tracking.token_ttl",
                                   f"{tracking.token_ttl} is too short for unsubscribe links",
                                   "use at least 30d: an unsubscribe link must work for 30 days after sending"))
    known = set(tracking.links) | {UNSUBSCRIBE}
    for template in project.templates.values():
        for where, name in _links_used(project, template):
            if name not in known:
                problems.append(Diagnostic(where, f"templates.{template.name}", _unknown_link(name, frozenset(tracking.links)),
                                           "or fix the name in the template"))
    return problems


def _links_used(project: Project, template: Any) -> list[tuple[Location, str]]:
    """(where, name) of every ``links.NAME`` in a template's inline parts and files."""
    from jinja2 import nodes

    from .templates import INLINE_PARTS, environment

    sources = [(locate(template.spec, (part,)), template.spec[part], False) for part in INLINE_PARTS if isinstance(template.spec.get(part), str)]
    for path in template.files.values():
        if path.is_file():
            sources.append((Location(display_path(path, project.root), 1, 1), path.read_text("utf-8", errors="replace"), True))
    found = []
    for where, text, is_file in sources:
        try:
            tree = environment(False).parse(text)
        except Exception:  # a syntax error is reported by the template checks already
            continue
        for node in tree.find_all(nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name == "links":
                found.append((Location(where.file, node.lineno, 1) if is_file else where, node.attr))
    return found
