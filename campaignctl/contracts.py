"""What plugins provide: typing.Protocols that built-in and third-party plugins satisfy alike."""

from __future__ import annotations

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
    key: str
    status: str  # "sent" | "temporary_failure" | "permanent_failure"
    provider_id: str | None = None
    error: str | None = None


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
