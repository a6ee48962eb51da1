"""Built-in channel ``smtp``: e-mail through an SMTP relay or provider.

One connection is opened on the first message and reused across batches until
close() (or until ``max_messages_per_connection``); a connection the server
dropped while idle is reopened. Each message is its own SMTP transaction
(MAIL, RCPT, DATA), so the server's answer is known per message:

- 2xx: sent; the provider id is the Message-ID (the same on every attempt);
- 4xx, a dropped connection, a failed connect/TLS/login: temporary_failure,
  retried by campaignctl.delivery with backoff;
- 5xx: permanent_failure, never retried; except a refusal of the sender
  (MAIL FROM), which every message would get alike: temporary.

A message that cannot be an e-mail (a bad address) fails on its own; send()
never raises for one message. Errors never contain the password.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from campaignctl.contracts import OutgoingMessage, SendResult, unknown_options
from campaignctl.mime import AddressError, ConfigError, DkimKey, Email, Mailbox, MessageError, build_email
from campaignctl.model import Channel
from campaignctl.options import ca_file_option, number_option

OPTIONS = (
    "host", "port", "security", "username", "password", "from", "reply_to", "timeout",
    "rate_per_second", "max_messages_per_connection", "dkim", "ca_file",
)
DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}


@dataclass(frozen=True, repr=False)
class SmtpSettings:
    host: str
    port: int
    security: str  # none | starttls | tls
    sender: Mailbox
    reply_to: Mailbox | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    rate_per_second: float | None = None
    max_messages_per_connection: int = 100
    dkim: DkimKey | None = None
    ca_file: str | None = None

    def __repr__(self) -> str:  # the password is never shown
        return f"SmtpSettings(host={self.host!r}, port={self.port}, security={self.security!r}, username={self.username!r})"

    @classmethod
    def from_options(cls, options: Mapping[str, Any], project_root: Path) -> "SmtpSettings":
        if problem := unknown_options(options, OPTIONS, "smtp"):
            raise ConfigError(problem)
        host = options.get("host")
        if not isinstance(host, str) or not host.strip():
            raise ConfigError("smtp: option 'host' is required (the SMTP server's name, e.g. smtp.provider.example)")
        security = options.get("security", "starttls")
        if security not in DEFAULT_PORTS:
            raise ConfigError(f"smtp: option 'security' must be none, starttls or tls, not {security!r}")
        username, password = options.get("username"), options.get("password")
        if (username is None) != (password is None):
            raise ConfigError("smtp: give both 'username' and 'password' (the password as ${env:NAME}), or neither")
        if username is not None and security == "none":
            raise ConfigError("smtp: a login over security 'none' would send the password in clear; use starttls or tls")
        return cls(
            host=host.strip(),
            port=_number(options, "port", int, DEFAULT_PORTS[security], minimum=1),
            security=security,
            sender=Mailbox.parse(options.get("from"), "from"),
            reply_to=Mailbox.parse(options["reply_to"], "reply_to") if options.get("reply_to") is not None else None,
            username=None if username is None else str(username),
            password=None if password is None else str(password),
            timeout=_number(options, "timeout", float, 30.0, minimum=0.1),
            rate_per_second=_number(options, "rate_per_second", float, None, minimum=0.001),
            max_messages_per_connection=_number(options, "max_messages_per_connection", int, 100, minimum=1),
            dkim=DkimKey.from_options(options["dkim"], project_root) if options.get("dkim") is not None else None,
            ca_file=ca_file_option(options.get("ca_file"), project_root, "smtp", ConfigError),
        )


def _number(options: Mapping[str, Any], name: str, kind: type, default: Any, *, minimum: float) -> Any:
    if options.get(name, default) is None:  # rate_per_second: no limit
        return None
    return number_option(options, name, kind, default, minimum=minimum, what="smtp", error=ConfigError)


@dataclass
class TokenBucket:
    """At most ``rate`` takes per second on average, bursts up to ``capacity``."""

    rate: float
    capacity: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _tokens: float = field(init=False)
    _updated: float = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = self.capacity
        self._updated = self.clock()

    def take(self) -> None:
        """Wait, if need be, until a token is there, and take it."""
        while True:
            now = self.clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            self.sleep((1 - self._tokens) / self.rate)


class ConnectionFailed(Exception):
    """No usable connection: connect, TLS or login failed. Nothing was sent."""


class _Answer(Exception):
    """The server refused a step of one message's transaction."""

    def __init__(self, step: str, code: int, text: bytes | str):
        self.step, self.code = step, code
        self.text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        super().__init__(f"{step}: {code} {self.text}")


class SmtpSender:
    """A ChannelSender over one reused SMTP connection."""

    def __init__(self, settings: SmtpSettings):
        self.settings = settings
        self._connection: smtplib.SMTP | None = None
        self._sent_on_connection = 0
        self.connections_opened = 0  # for tests and benchmarks
        rate = settings.rate_per_second
        self._bucket = TokenBucket(rate, max(1.0, rate)) if rate else None

    @classmethod
    def from_config(cls, channel: Channel, project_root: Path) -> "SmtpSender":
        return cls(SmtpSettings.from_options(channel.options, project_root))

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        broken: str | None = None  # once the server cannot be reached, the rest of the batch is not tried
        for message in messages:
            if broken is not None:
                results.append(SendResult(message.key, "temporary_failure", error=broken))
                continue
            try:
                results.append(self._send_one(message))
            except ConnectionFailed as exc:
                broken = str(exc)
                results.append(SendResult(message.key, "temporary_failure", error=broken))
        return results

    def close(self) -> None:
        """Say QUIT; safe to call more than once, and after a failure."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        settings = self.settings
        try:
            mail = build_email(message, settings.sender, reply_to=settings.reply_to, dkim_key=settings.dkim)
        except MessageError as exc:
            return SendResult(message.key, "permanent_failure", error=str(exc), address_invalid=isinstance(exc, AddressError))
        if self._bucket is not None:
            self._bucket.take()
        try:
            self._transaction(mail)
        except _Answer as exc:
            # A refused sender (MAIL FROM) refuses every message alike: a wrong
            # `from` or account, no fault of this message, so it stays retryable.
            temporary = 400 <= exc.code < 500 or exc.code < 200 or exc.step == "MAIL FROM"
            status = "temporary_failure" if temporary else "permanent_failure"
            if exc.code == 421:  # the server is closing this connection
                self._drop()
            gone = status == "permanent_failure" and exc.step == "RCPT TO" and _mailbox_gone(exc.text)
            return SendResult(message.key, status, error=str(exc), address_invalid=gone)
        except DeliveryUnknown as exc:
            return SendResult(message.key, "temporary_failure", error=str(exc))
        return SendResult(message.key, "sent", provider_id=mail.message_id)

    def _transaction(self, mail: Email) -> None:
        """MAIL, RCPT, DATA for one message. A connection lost before DATA is
        reopened once and the message tried again (nothing was delivered); lost
        after the message was handed over, the outcome is unknown: a temporary
        failure, the same Message-ID on the retry."""
        for attempt in (1, 2):
            connection = self._connect()
            handed_over = False
            try:
                _check(connection.mail(mail.envelope_from), "MAIL FROM", connection)
                _check(connection.rcpt(mail.recipient), "RCPT TO", connection)
                handed_over = True
                code, text = connection.data(mail.data)
                if code != 250:
                    raise _Answer("DATA", code, text)
                self._sent_on_connection += 1
                return
            except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
                _reset(connection)
                raise _Answer("DATA", exc.smtp_code, exc.smtp_error) from None
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                self._drop()
                if handed_over:
                    raise DeliveryUnknown(f"connection lost while sending the message ({_reason(exc)}); it may or may not have arrived") from None
                if attempt == 2:
                    raise ConnectionFailed(f"connection to {self._where()} lost: {_reason(exc)}") from None

    def _connect(self) -> smtplib.SMTP:
        if self._connection is not None and self._sent_on_connection >= self.settings.max_messages_per_connection:
            self.close()
        if self._connection is None:
            self._connection = self._open()
            self._sent_on_connection = 0
            self.connections_opened += 1
        return self._connection

    def _open(self) -> smtplib.SMTP:
        settings = self.settings
        context = ssl.create_default_context(cafile=settings.ca_file) if settings.security != "none" else None
        connection: smtplib.SMTP | None = None
        try:
            if settings.security == "tls":
                connection = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
            else:
                connection = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
            connection.ehlo()
            if settings.security == "starttls":
                if not connection.has_extn("starttls"):
                    raise ConnectionFailed(f"{self._where()} does not offer STARTTLS; use security: tls or none")
                connection.starttls(context=context)
                connection.ehlo()
            if settings.username is not None:
                connection.login(settings.username, settings.password or "")
            return connection
        except smtplib.SMTPAuthenticationError as exc:
            _close_quietly(connection)
            raise ConnectionFailed(f"login as {settings.username!r} at {self._where()} refused: {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            _close_quietly(connection)
            raise ConnectionFailed(f"cannot use {self._where()}: {_reason(exc)}") from None
        except ConnectionFailed:
            _close_quietly(connection)
            raise

    def _drop(self) -> None:
        _close_quietly(self._connection)
        self._connection = None

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port} ({self.settings.security})"


class DeliveryUnknown(Exception):
    """The connection broke after the message was handed over."""


def _check(answer: tuple[int, bytes], step: str, connection: smtplib.SMTP) -> None:
    code, text = answer
    if not 200 <= code < 300:
        _reset(connection)
        raise _Answer(step, code, text)


def _mailbox_gone(text: str) -> bool:
    """Whether a refusal's enhanced status code (RFC 3463) says the mailbox or
    its domain does not exist, rather than, say, a policy or a full mailbox."""
    return text.split(" ", 1)[0] in {"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"}


def _reset(connection: smtplib.SMTP) -> None:
    """End a refused transaction so the connection can carry the next message."""
    try:
        connection.rset()
    except (smtplib.SMTPException, OSError):
        pass  # a broken connection shows itself on the next message


def _reason(exc: BaseException) -> str:
    # smtplib's and ssl's texts name hosts and codes, never the credentials.
    if isinstance(exc, socket.timeout):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _close_quietly(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        try:
            connection.close()
        except OSError:
            pass
