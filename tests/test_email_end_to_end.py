"""The acceptance test of "Templates and e-mail", with real parts only.

Given the example project on a small demo retailer, its ``email`` channel on
the smtp plugin (DKIM-signed) pointed at a real aiosmtpd server, and tracking
on, when apply runs at 10:30 Moscow time and an hour later (the abandoned-cart
e-mail, with its AMP part, follows the push by an hour), then every message
that arrives parses, has its text, AMP and HTML parts, a one-click
List-Unsubscribe pair signed by DKIM, and the server got exactly what the
ledger says was sent. The https URI from one received header is then POSTed,
as a mailbox provider does, to `campaignctl serve` running as its own process
behind TLS (a relay standing in for the production reverse proxy): that
customer is unsubscribed and the next plan leaves them out of e-mail.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import queue
import re
import shutil
import sqlite3
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dkim
import pytest
import trustme
import yaml
from contract.channel_peers import ReceivedMail, smtp_peer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from campaignctl.connect import open_state_store
from campaignctl.demo_data import generate_demo_data
from campaignctl.executor import apply, make_plan
from campaignctl.planner.plan import MessageAction, Plan
from campaignctl.project import load_project

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)  # 10:30 in Moscow: the December broadcasts are due
CLOCKS = (NOW, NOW + timedelta(hours=1))  # the abandoned-cart e-mail waits an hour after the push
LATER = NOW + timedelta(days=2)  # the next plan after the unsubscribe
ENV = {"CAMPAIGNCTL_LINK_SECRET": "e2e-link-secret-never-shown-4f9c2a"}
SENDER_DOMAIN, SELECTOR = "uyut.example", "e2e2026"
ONE_CLICK = b"List-Unsubscribe=One-Click"


# --------------------------------------------------------------------------- TLS in front of serve


@dataclass
class HttpsRelay:
    """Terminates TLS on ``port`` and passes the bytes unchanged to
    ``campaignctl serve`` at ``upstream_port``: what the reverse proxy at
    tracking.base_url does in production (serve itself speaks plain HTTP)."""

    port: int = 0
    upstream_port: int | None = None  # known once serve has started


@contextlib.contextmanager
def https_relay(server_context: ssl.SSLContext) -> Iterator[HttpsRelay]:
    relay = HttpsRelay()
    loop = asyncio.new_event_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def connect(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", relay.upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    server = loop.run_until_complete(asyncio.start_server(connect, "127.0.0.1", 0, ssl=server_context))
    relay.port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, name="https-relay", daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts only the test CA


@pytest.fixture(scope="module")
def tls() -> Tls:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Tls(server, client)


# --------------------------------------------------------------------------- the project, applied


@dataclass(frozen=True)
class Emailed:
    root: Path
    base_url: str  # tracking.base_url: https, at the relay
    received: tuple[ReceivedMail, ...]
    planned: dict[str, MessageAction]  # key -> what the plan showed at the clock it was sent
    dkim_record: bytes  # the TXT record at SELECTOR._domainkey.SENDER_DOMAIN
    amp_templates: frozenset[str]  # templates with an AMP part

    @property
    def project(self):
        return load_project(self.root)

    def has_amp(self, mail: ReceivedMail) -> bool:
        return self.planned[mail.key].template in self.amp_templates


def dkim_key() -> tuple[str, bytes]:
    """A fresh RSA key: the private PEM for the channel, the DNS TXT record for verifiers."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def configure(root: Path, smtp_port: int, base_url: str) -> None:
    """The copied campaignctl.yaml, as an operator would edit it: e-mail over
    SMTP with DKIM, tracked links answered at ``base_url``."""
    path = root / "campaignctl.yaml"
    config = yaml.safe_load(path.read_text())
    config["channels"]["email"] = {
        "plugin": "smtp", "kind": "email", "cost": config["channels"]["email"]["cost"],
        "options": {
            "host": "127.0.0.1", "port": smtp_port, "security": "none", "from": f"Uyut Home <news@{SENDER_DOMAIN}>", "timeout": 5,
            "dkim": {"domain": SENDER_DOMAIN, "selector": SELECTOR, "private_key_file": "dkim.pem"},
        },
    }
    config["tracking"]["base_url"] = base_url
    # Sent at NOW (2026-12-01) while serve checks links against the real clock.
    config["tracking"]["token_ttl"] = "100y"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


@pytest.fixture(scope="module")
def relay(tls) -> Iterator[HttpsRelay]:
    with https_relay(tls.server) as relay:
        yield relay


@pytest.fixture(scope="module")
def emailed(tmp_path_factory, relay) -> Iterator[Emailed]:
    root = tmp_path_factory.mktemp("e2e") / "project"
    shutil.copytree(ROOT / "campaigns", root, ignore=shutil.ignore_patterns("data", "out", ".campaignctl", "out-plan.json"))
    generate_demo_data(root / "data", 2000, seed=11, as_of=NOW + timedelta(days=3))
    private, record = dkim_key()
    (root / "dkim.pem").write_text(private)
    base_url = f"https://127.0.0.1:{relay.port}/mail"  # a path below the host, as a shared domain would use
    planned: dict[str, MessageAction] = {}
    with smtp_peer() as peer:
        configure(root, peer.port, base_url)
        for clock in CLOCKS:
            project = load_project(root)
            planned.update((m.key, m) for m in make_plan(project, clock, environ=ENV).messages)
            result = apply(project, clock, environ=ENV)
            assert result.applied and not result.render_failures, (result.plan.violations, result.render_failures)
            assert not result.delivery["errors"], result.delivery["errors"]
    amp_templates = frozenset(name for name, template in project.templates.items() if "amp" in template.files or "amp" in template.spec)
    yield Emailed(root, base_url, tuple(peer.received), planned, record, amp_templates)


def sent_email_keys(root: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(root / ".campaignctl" / "state.db")) as db:
        return [key for (key,) in db.execute("SELECT key FROM messages WHERE channel = 'email' AND status = 'sent'")]


def unsubscribe_uris(mail: ReceivedMail) -> list[str]:
    return re.findall(r"<([^<>]+)>", str(mail.message["List-Unsubscribe"]))


def dkim_tags(mail: ReceivedMail) -> dict[str, str]:
    """The tags of the DKIM-Signature header, whitespace removed (RFC 6376 3.2)."""
    value = re.sub(r"\s+", "", str(mail.message["DKIM-Signature"]))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


# --------------------------------------------------------------------------- what arrived


def test_the_server_received_exactly_the_emails_the_ledger_records_as_sent(emailed):
    keys = [mail.key for mail in emailed.received]
    assert len(keys) > 100  # a broadcast day on 2,000 customers
    assert len(keys) == len(set(keys)), "a message arrived twice"
    ledger = sent_email_keys(emailed.root)
    assert len(keys) == len(ledger) and set(keys) == set(ledger)
    assert set(keys) == {key for key, m in emailed.planned.items() if m.channel == "email"}  # and what the plans showed


def test_every_message_parses_into_text_amp_and_html_alternatives(emailed):
    with_amp = 0
    for mail in emailed.received:
        message = mail.message
        assert not message.defects, (mail.key, message.defects)
        assert message.get_content_type() == "multipart/alternative", mail.key
        parts = list(message.iter_parts())
        assert all(not part.defects for part in parts), mail.key
        expected = ["text/plain", "text/x-amp-html", "text/html"] if emailed.has_amp(mail) else ["text/plain", "text/html"]
        assert [part.get_content_type() for part in parts] == expected, mail.key  # AMP before HTML: clients show the last they can
        text, html = parts[0].get_content(), parts[-1].get_content()
        assert text.strip() and "{{" not in text, mail.key
        assert "<html" in html and "{{" not in html, mail.key
        if len(parts) == 3:
            with_amp += 1
            amp = parts[1].get_content()
            assert re.search(r"<html [^>]*(⚡4email|amp4email)", amp) and "{{" not in amp, mail.key
        assert message["To"].addresses[0].addr_spec == mail.rcpt_tos[0]
        assert message["From"].addresses[0].domain == SENDER_DOMAIN
    assert with_amp > 0, "no e-mail with an AMP part arrived"
    assert "cart_email" in {emailed.planned[mail.key].template for mail in emailed.received}


def test_every_message_offers_one_click_unsubscribe_at_the_serve_url_and_a_mailto(emailed):
    for mail in emailed.received:
        https, mailto = unsubscribe_uris(mail)
        assert https.startswith(f"{emailed.base_url}/u/"), (mail.key, https)
        token = https.rsplit("/", 1)[1]
        assert mailto == f"mailto:unsubscribe@uyut.example?subject=unsubscribe-{token}", mail.key
        assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click", mail.key
        # Each message has one unsubscribe token: the footer link is the header's URI.
        html = list(mail.message.iter_parts())[-1].get_content()
        assert set(re.findall(rf'href="({re.escape(emailed.base_url)}/u/[^"]+)"', html)) <= {https}, mail.key
    tokens = [unsubscribe_uris(mail)[0] for mail in emailed.received]
    assert len(set(tokens)) == len(tokens)
    assert ENV["CAMPAIGNCTL_LINK_SECRET"] not in "".join(mail.data.decode("ascii") for mail in emailed.received)


def test_every_message_carries_a_dkim_signature_that_verifies_and_covers_list_unsubscribe(emailed):
    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return emailed.dkim_record if name == f"{SELECTOR}._domainkey.{SENDER_DOMAIN}.".encode() else None

    for mail in emailed.received:
        assert dkim.verify(mail.data, dnsfunc=dns), mail.key
        tags = dkim_tags(mail)
        assert (tags["d"], tags["s"]) == (SENDER_DOMAIN, SELECTOR), mail.key
        signed = {name.lower() for name in tags["h"].split(":")}
        assert {"from", "to", "subject", "message-id", "list-unsubscribe", "list-unsubscribe-post"} <= signed, (mail.key, signed)
    # The signature is what makes the header trustworthy: another unsubscribe URI breaks it.
    first = emailed.received[0]
    token = unsubscribe_uris(first)[0].rsplit("/", 1)[1]
    tampered = first.data.replace(token.encode(), unsubscribe_uris(emailed.received[1])[0].rsplit("/", 1)[1].encode())
    assert tampered != first.data and not dkim.verify(tampered, dnsfunc=dns)


# --------------------------------------------------------------------------- one-click unsubscribe


@dataclass(frozen=True)
class Served:
    process: subprocess.Popen
    log: list[str]  # stderr lines so far


@pytest.fixture(scope="module")
def served(emailed, relay) -> Iterator[Served]:
    """`campaignctl serve` as run in production: its own process, the same
    environment as apply, on a free port behind the https relay."""
    script = Path(sys.executable).with_name("campaignctl")  # the installed console script, as an operator runs it
    program = [str(script)] if script.is_file() else [sys.executable, "-m", "campaignctl"]
    command = [*program, "-C", str(emailed.root), "serve", "--host", "127.0.0.1", "--port", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env={**os.environ, **ENV, "NO_COLOR": "1"})
    log: list[str] = []
    ports: queue.Queue[int | None] = queue.Queue()

    def read_log() -> None:  # drained for the whole run, so serve never blocks on a full pipe
        for line in process.stderr:
            log.append(line)
            if match := re.search(r"running on http://127\.0\.0\.1:(\d+)", line):
                ports.put(int(match.group(1)))
        ports.put(None)

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        try:
            port = ports.get(timeout=30)
        except queue.Empty:
            port = None
        assert port, "campaignctl serve did not start:\n" + "".join(log)
        relay.upstream_port = port
        yield Served(process, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        reader.join(10)
        process.stderr.close()


def request(tls: Tls, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of one https request through the relay, trusting only the test CA."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=10, context=tls.client) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def email_customers(plan: Plan) -> set[int]:
    return {m.customer_id for m in plan.messages if m.channel == "email"}


def unsubscribed_count(plan: Plan) -> int:
    return sum(h.count for h in plan.held_back if h.rule == "unsubscribed")


def unsubscribed(emailed: Emailed) -> set[tuple[str, str]]:
    store = open_state_store(emailed.project, ENV)
    try:
        return set(store.unsubscribed())
    finally:
        store.close()


def test_a_one_click_post_to_serve_unsubscribes_and_the_next_plan_leaves_the_customer_out(emailed, served, tls):
    project = emailed.project
    before = make_plan(project, LATER, environ=ENV)
    received_by = {emailed.planned[mail.key].customer_id: mail for mail in emailed.received}
    candidates = sorted(set(received_by) & email_customers(before))
    assert candidates, "no customer who got an e-mail is due another one at the later clock"
    customer = candidates[0]
    url = unsubscribe_uris(received_by[customer])[0]

    # A link scanner's GET shows the confirmation page and changes nothing.
    status, page = request(tls, url)
    assert status == 200 and b'<form method="post">' in page
    assert (str(customer), "email") not in unsubscribed(emailed)

    # The mailbox provider's RFC 8058 POST, to the URL exactly as the header gave it.
    status, page = request(tls, url, ONE_CLICK, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and b"You are unsubscribed" in page
    assert (str(customer), "email") in unsubscribed(emailed)

    after = make_plan(load_project(emailed.root), LATER, environ=ENV)
    assert customer not in email_customers(after)
    assert unsubscribed_count(after) > unsubscribed_count(before)
    assert email_customers(after) == email_customers(before) - {customer}  # nobody else is affected

    logged = "".join(served.log)
    assert "GET /u/… 200" in logged and "POST /u/… 200" in logged
    assert url.rsplit("/", 1)[1] not in logged and ENV["CAMPAIGNCTL_LINK_SECRET"] not in logged
