"""What plugins provide: typing.Protocols that built-in and third-party plugins satisfy alike."""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from .model import Channel, DataSourceConfig, PluginConfig

if TYPE_CHECKING:  # pyarrow is heavy to import; `campaignctl --help` must not pay for it
    import pyarrow


@runtime_checkable
class DataSource(Protocol):
    """Customer data behind the data contract (docs/format.md), queried with SQL.

    campaignctl compiles segments once, with sqlglot, into the source's
    ``dialect``; the source only runs SQL and describes its tables.
    """

    dialect: str  # a sqlglot dialect name: "duckdb", "postgres", "spark", ...

    def table_columns(self, table: str) -> list[str] | None:
        """The physical column names of ``table``, or None when there is no such table."""

    def query(self, sql: str) -> pyarrow.Table:
        """Run one SELECT and return all its rows."""

    def close(self) -> None:
        """Release connections; the source is not used afterwards."""


@runtime_checkable
class InProcessEngine(Protocol):
    """A DataSource whose engine runs in this process, on its cores (DuckDB):
    optional. campaignctl runs a query beside CPU-bound Python (the planner
    beside the order history) inside ``beside_python()``, where the engine
    leaves the Python a core: on two cores, two engine threads and the planner
    took turns on both."""

    def beside_python(self) -> AbstractContextManager[None]:
        """While it is open: one thread fewer for queries (at least one)."""


# A factory receives the project's data-source settings (secrets already
# resolved into ``options``) and the project directory, and connects.
DataSourceFactory = Callable[[DataSourceConfig, Path], DataSource]


@dataclass(frozen=True)
class OutgoingMessage:
    """One rendered message for one customer, keyed for exactly-once delivery."""

    key: str  # idempotency key: campaign/version/customer/step/window
    campaign: str
    customer_id: str
    channel: str  # the project's channel name
    to: str  # address on that channel: e-mail, phone, token ...
    parts: Mapping[str, str] = field(default_factory=dict)  # subject, html, text, body ...
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    """How the provider call for one message ended. ``status``:

    - ``"sent"``: the provider took the message;
    - ``"temporary_failure"``: it did not, and sending again may work (deliver() retries);
    - ``"permanent_failure"``: it did not, and never will (never retried);
    - ``"in_doubt"``: the message was handed over and no answer came (a read
      time-out after the whole request went out, an SMPP part never answered):
      the provider may have it. deliver() records it in doubt and never re-sends
      it blindly; a LookupSender or a person settles it.
    """

    key: str
    status: str  # one of SEND_STATUSES
    provider_id: str | None = None
    error: str | None = None
    # A temporary failure the provider asked to retry no sooner than this many
    # seconds (HTTP Retry-After); deliver() waits at least that long, up to its backoff maximum.
    retry_after: float | None = None
    # A permanent failure because the address is gone (a push token unregistered,
    # a subscription expired): deliver() records a "bounced" outcome with payload
    # {"address_invalid": true, "address": address_fingerprint(to)} so the customer
    # is not sent to that address again (a new address on that channel is).
    address_invalid: bool = False


def address_fingerprint(address: str | None) -> str | None:
    """What state keeps of an address that is gone: enough to tell whether a
    customer's current address is that one, without keeping the address."""
    if not address:
        return None
    return hashlib.sha256(address.strip().encode()).hexdigest()[:32]


SENT, TEMPORARY_FAILURE, PERMANENT_FAILURE, IN_DOUBT = "sent", "temporary_failure", "permanent_failure", "in_doubt"
SEND_STATUSES = (SENT, TEMPORARY_FAILURE, PERMANENT_FAILURE, IN_DOUBT)


@runtime_checkable
class ChannelSender(Protocol):
    """Delivers messages on one channel."""

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send a batch; one result per message, in order. Never raises for a
        single bad message: that message gets a failure result."""

    def close(self) -> None:
        """Flush and release connections."""


ChannelFactory = Callable[[Channel, Path], ChannelSender]


# The StateStore protocol lives with the state it keeps, in campaignctl.state;
# a factory receives the project's state_store settings and the project directory.
StateStoreFactory = Callable[[PluginConfig, Path], Any]


def unknown_options(options: Mapping[str, Any], known: Sequence[str], what: str) -> str | None:
    """The message a plugin factory raises for options it does not know (a typo
    must not be silently ignored), or None when every option is known."""
    import difflib

    unknown = sorted(set(options) - set(known))
    if not unknown:
        return None
    hints = [f"{name!r} (did you mean {match[0]!r}?)" if (match := difflib.get_close_matches(name, known, n=1)) else repr(name) for name in unknown]
    return f"{what}: unknown option(s) {', '.join(hints)}; known: {', '.join(known)}"


@runtime_checkable
class OutcomeSource(Protocol):
    """Optional for a ChannelSender whose provider reports outcomes on the
    sending connection (SMPP delivery receipts): deliver() records what it
    holds after each delivery, before the sender is closed."""

    def drain_outcomes(self) -> list[Any]:
        """The outcomes (campaignctl.state.Outcome) received so far on this
        sender's messages, each given once; never blocks for long."""


@runtime_checkable
class WebhookParser(Protocol):
    """Optional for a ChannelSender: turns its provider's webhook requests into
    outcomes (campaignctl.state.Outcome) for `campaignctl serve`, at
    ``POST /webhooks/<channel>``. Without it, serve accepts campaignctl's own
    signed JSON format (docs/tracking.md)."""

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[Any]:
        """Check the request is the provider's (its signature, with secrets from
        the channel's options) and return its outcomes. Raise PermissionError
        when it is not authentic, ValueError when it cannot be read. Header
        names are lower case."""


@runtime_checkable
class SubscriptionVerifier(Protocol):
    """Optional for a WebhookParser whose provider confirms the webhook address
    with a GET before it sends anything (Meta's hub.mode / hub.verify_token /
    hub.challenge handshake for WhatsApp)."""

    def verify_subscription(self, query: Mapping[str, str]) -> str | None:
        """The body to answer ``GET /webhooks/<channel>?<query>`` with (200), or
        None when the request does not prove it knows the channel's secret (403)."""


@dataclass(frozen=True)
class ExportedOffer:
    """One issued offer as an offer sink receives it: a promo code a customer
    holds, or bonus points credited to them. ``key`` (campaign/customer/offer)
    is unique: a sink that already has a key must not add it again."""

    key: str
    campaign: str
    customer_id: str
    offer: str
    kind: str  # the offer's kind: fixed_discount, percent_discount, bonus_points, ...
    code: str | None  # None for an accrual without a code
    pool: str | None
    issued_at: str  # ISO 8601, UTC
    valid_from: str | None  # ISO date, project time zone
    valid_until: str | None  # ISO date, inclusive
    max_uses: int | None  # orders the code may be used on; None: unlimited (or no code)
    terms: Mapping[str, Any] = field(default_factory=dict)  # amount, percent, points, min_check ... as in the offer

    def as_dict(self) -> dict[str, Any]:
        return {name: (dict(value) if name == "terms" else value) for name, value in self.__dict__.items()}


@runtime_checkable
class OfferSink(Protocol):
    """Exports issued promo codes and bonus accruals to a point of sale or a
    loyalty system (``offer_sinks:`` in campaignctl.yaml).

    campaignctl records in state which keys each sink took, after ``export``
    returns; a crash in between hands the same offers over again, so a sink
    must be idempotent by ``key``."""

    def export(self, offers: Sequence[ExportedOffer]) -> None:
        """Hand a batch over durably (on disk, or acknowledged by the remote
        system) before returning; skip keys it already has. Raise when the
        batch could not be handed over: it is offered again by the next run."""

    def close(self) -> None:
        """Flush and release connections."""


# A factory receives the sink's settings (name, plugin, options with secrets resolved) and the project directory.
OfferSinkFactory = Callable[[Any, Path], OfferSink]
