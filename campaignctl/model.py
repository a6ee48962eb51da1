"""The validated project as frozen data.

Definitions whose inner structure belongs to one later stage (a segment's
condition tree, an offer's terms, a feature's parameters) are kept as the
read-only mappings the loader produced, located, so that stage can still point
at file:line:col; the fields every stage needs are typed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .diagnostics import Location

EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return EMPTY



@dataclass(frozen=True)
class TableMapping:
    """Where a logical table of the data contract lives and how its columns are named."""

    table: str
    columns: Mapping[str, str] = field(default_factory=_empty)

    def column(self, logical: str) -> str:
        return self.columns.get(logical, logical)


@dataclass(frozen=True)
class PluginConfig:
    """A plugin chosen in the project file and its options (may hold ${env:...})."""

    plugin: str
    options: Mapping[str, Any] = field(default_factory=_empty)
    location: Location = Location("")


@dataclass(frozen=True)
class DataSourceConfig(PluginConfig):
    tables: Mapping[str, TableMapping] = field(default_factory=_empty)

    def table(self, logical: str) -> TableMapping:
        return self.tables.get(logical) or TableMapping(logical)


@dataclass(frozen=True)
class Channel:
    name: str
    plugin: str
    kind: str
    cost: float
    options: Mapping[str, Any] = field(default_factory=_empty)
    location: Location = Location("")


@dataclass(frozen=True)
class FrequencyCap:
    channel: str  # a channel name, or "any"
    max: int
    per: str  # duration


@dataclass(frozen=True)
class Policies:
    global_holdout: float = 0.05
    quiet_hours: tuple[str, str] | None = None  # (start, end) "HH:MM" in the customer's zone
    frequency_caps: tuple[FrequencyCap, ...] = ()
    suppress_inactive_days: int | None = 365
    drr_limits: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({"bonus": 0.09, "discount": 0.15}))
    monthly_budget: float | None = None


@dataclass(frozen=True)
class Definition:
    """Anything named in a document: where it is and what it says."""

    name: str
    location: Location
    spec: Mapping[str, Any]  # the located mapping as written (read-only by convention)

    @property
    def description(self) -> str:
        return self.spec.get("description", "")


@dataclass(frozen=True)
class Feature(Definition):
    kind: str = ""


@dataclass(frozen=True)
class Segment(Definition):
    @property
    def where(self) -> Mapping[str, Any]:
        return self.spec["where"]


@dataclass(frozen=True)
class Offer(Definition):
    kind: str = ""


@dataclass(frozen=True)
class Template(Definition):
    channel: str = ""  # a channel kind
    files: Mapping[str, Path] = field(default_factory=_empty)  # part name (mjml, amp, text, html, body) -> resolved file


@dataclass(frozen=True)
class CascadeStep:
    channel: str  # a channel name or "cheapest"
    templates: Mapping[str, str]  # channel kind -> template name, for "cheapest"
    template: str | None = None  # the one template when the channel is fixed
    wait: str = "0"
    condition: str | None = None  # not_delivered | not_opened | not_clicked | not_converted
    offer: str | None = None
    location: Location = Location("")


@dataclass(frozen=True)
class Cascade(Definition):
    steps: tuple[CascadeStep, ...] = ()


@dataclass(frozen=True)
class Arm:
    name: str
    weight: float = 1.0
    offer: str | None = None
    delay: str | None = None


@dataclass(frozen=True)
class Campaign(Definition):
    kind: str = "broadcast"
    audience: str = ""
    exclude: tuple[str, ...] = ()
    cascade: str | None = None
    message: CascadeStep | None = None  # a single-step campaign without a cascade
    offer: str | None = None
    control: float = 0.0
    arms: tuple[Arm, ...] = ()
    on_change: str = "continue"
    priority: int = 50
    enabled: bool = True


@dataclass(frozen=True)
class PromoPool:
    """Promo codes offers draw from (``promo_pools:`` in campaignctl.yaml):
    generated in a format, or imported from a file. campaignctl.promocodes
    makes and checks codes; campaignctl.issuing hands them out."""

    name: str
    source: str  # "generate" | "import"
    size: int | None = None  # generate: how many codes the pool may issue; import: the file's codes
    alphabet: str = ""  # generate only
    length: int = 0
    prefix: str = ""
    check: bool = True
    file: Path | None = None  # import only: resolved against the project
    column: str | None = None  # import only, .csv files: the column of codes
    max_uses: int | None = 1  # redemptions per code the point of sale allows; None: unlimited
    expires: Mapping[str, Any] = field(default_factory=_empty)  # validity {days} | {from, to}; empty: the offer's `valid`
    location: Location = Location("")
    spec: Mapping[str, Any] = field(default_factory=_empty, compare=False)  # as written, located


@dataclass(frozen=True)
class OfferSinkConfig(PluginConfig):
    """Where issued codes and bonus accruals are exported (``offer_sinks:``)."""

    name: str = ""


@dataclass(frozen=True)
class Tracking:
    """Tracked links and one-click unsubscribe, answered by `campaignctl serve`
    (docs/tracking.md). Secrets stay ``${env:NAME}`` references here: they are
    resolved only by the command that signs or checks a token."""

    base_url: str  # public URL of `campaignctl serve`, without a trailing slash
    secret: str  # "${env:NAME}"
    token_ttl: str = "60d"  # duration
    links: Mapping[str, str] = field(default_factory=_empty)  # name -> target URL, for {{ links.NAME }}
    unsubscribe_mailto: str | None = None
    webhook_secret: str | None = None  # "${env:NAME}"
    spec: Mapping[str, Any] = field(default_factory=_empty, compare=False)  # as written, located: errors point into it


@dataclass(frozen=True)
class Project:
    """A whole project, validated: every reference in it resolves."""

    root: Path
    name: str
    timezone: str
    currency: str
    data_source: DataSourceConfig
    state_store: PluginConfig
    channels: Mapping[str, Channel]
    policies: Policies
    features: Mapping[str, Feature] = field(default_factory=_empty)
    segments: Mapping[str, Segment] = field(default_factory=_empty)
    offers: Mapping[str, Offer] = field(default_factory=_empty)
    templates: Mapping[str, Template] = field(default_factory=_empty)
    cascades: Mapping[str, Cascade] = field(default_factory=_empty)
    campaigns: Mapping[str, Campaign] = field(default_factory=_empty)
    tracking: Tracking | None = None  # None: links are placeholders, no List-Unsubscribe
    promo_pools: Mapping[str, PromoPool] = field(default_factory=_empty)
    offer_sinks: Mapping[str, OfferSinkConfig] = field(default_factory=_empty)
    files: tuple[str, ...] = field(default=(), compare=False)  # documents read, for reports
