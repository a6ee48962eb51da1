"""Promo-code pools: the code format and its check character, import files,
expiry, the state stores' part (SQLite and PostgreSQL), issuing exactly once,
and the offer sinks (a CSV/Parquet file, a webhook on a real local HTTP server)."""

from __future__ import annotations

import csv
import json
import threading
from dataclasses import dataclass
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from campaignctl import plugins
from campaignctl.contracts import ExportedOffer, OfferSink
from campaignctl.hookspecs import hookimpl
from campaignctl.issuing import (
    PoolExhausted,
    export_offers,
    issue_offers,
    issued_codes,
    shared_holder,
    validity,
)
from campaignctl.model import OfferSinkConfig, PluginConfig
from campaignctl.project import check_project, load_project
from campaignctl.promocodes import (
    DEFAULT_ALPHABET,
    CodeFileError,
    CodeFormat,
    check_character,
    generate_codes,
    read_code_file,
)
from campaignctl.state import IssuedOffer, StateStore

NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)  # 10:30 in Moscow


# --------------------------------------------------------------------------- the format


def test_generated_codes_are_unique_and_made_of_the_alphabet():
    fmt = CodeFormat(prefix="HELLO", length=8)
    codes = generate_codes(fmt, 100_000)
    assert len(codes) == len(set(codes)) == 100_000
    for code in codes[:5000]:
        assert code.startswith("HELLO") and len(code) == 5 + 8 + 1
        assert set(code[5:]) <= set(DEFAULT_ALPHABET)
        assert fmt.is_well_formed(code)
    assert not set("01OIL") & set(DEFAULT_ALPHABET) and len(DEFAULT_ALPHABET) == 31


def test_every_character_of_the_alphabet_is_drawn_about_equally():
    fmt = CodeFormat(alphabet="ABCDEFG", length=10, check=False)
    drawn = "".join(generate_codes(fmt, 20_000))
    counts = [drawn.count(ch) for ch in fmt.alphabet]
    assert min(counts) > 0.95 * len(drawn) / 7 and max(counts) < 1.05 * len(drawn) / 7  # no modulo bias


def test_a_small_space_is_filled_without_repeating_a_code():
    fmt = CodeFormat(alphabet="ABC", length=4, check=False)  # 81 codes
    assert len(set(generate_codes(fmt, 70))) == 70


@pytest.mark.parametrize("alphabet", [DEFAULT_ALPHABET, "0123456789X", "ABCDEFGHJ"])
def test_the_check_character_catches_every_single_character_error(alphabet):
    fmt = CodeFormat(alphabet=alphabet, length=6)
    for code in generate_codes(fmt, 300):
        for position in range(len(code)):
            for other in alphabet:
                if other != code[position]:
                    assert not fmt.is_well_formed(code[:position] + other + code[position + 1:]), (code, position, other)


@pytest.mark.parametrize("alphabet", [DEFAULT_ALPHABET, "0123456789X", "ABCDEFGHJ"])
def test_the_check_character_catches_every_swap_of_neighbours(alphabet):
    fmt = CodeFormat(alphabet=alphabet, length=6)
    body_pairs = [(a, b) for a in alphabet for b in alphabet if a != b]
    for a, b in body_pairs:  # every pair of characters, at every position, check character included
        for position in range(fmt.length):
            body = (alphabet[0] * position + a + b + alphabet[0] * fmt.length)[: fmt.length]
            code = body + check_character(body, alphabet)
            assert fmt.is_well_formed(code)
            swapped = code[:position] + code[position + 1] + code[position] + code[position + 2:]
            assert swapped == code or not fmt.is_well_formed(swapped), (code, swapped)


def test_formats_that_cannot_keep_the_promise_are_refused():
    assert "odd number" in " ".join(CodeFormat(alphabet="ABCD").problems())
    assert CodeFormat(alphabet="ABCD", check=False).problems() == []
    assert "repeats" in " ".join(CodeFormat(alphabet="ABCA").problems())
    assert "spaces" in " ".join(CodeFormat(alphabet="AB C").problems())


# --------------------------------------------------------------------------- import files


def test_a_text_file_gives_one_code_per_line(tmp_path):
    path = tmp_path / "codes.txt"
    path.write_text("\ufeffAAA1\n\n  BBB2 \nCCC3")
    assert read_code_file(path) == ["AAA1", "BBB2", "CCC3"]


def test_a_csv_file_gives_the_named_column(tmp_path):
    path = tmp_path / "codes.csv"
    path.write_text("id,promo,note\n1,X1,first\n2,X2,\"with, comma\"\n\n3,X3,\n")
    assert read_code_file(path, "promo") == ["X1", "X2", "X3"]
    with pytest.raises(CodeFileError, match=r"codes.csv:1: no column 'code' in the header \(columns: id, promo, note\)"):
        read_code_file(path)


@pytest.mark.parametrize("text, message", [
    ("A1\nB2\nA1\n", r":3: code 'A1' repeats line 1"),
    ("A1\nB 2\n", r":2: code 'B 2' has spaces inside"),
    ("\n\n", r": holds no codes"),
])
def test_bad_import_files_name_the_line(tmp_path, text, message):
    path = tmp_path / "codes.txt"
    path.write_text(text)
    with pytest.raises(CodeFileError, match=message):
        read_code_file(path)


# --------------------------------------------------------------------------- a project with pools


PROJECT = """\
version: 1
name: shop
timezone: Europe/Moscow
currency: RUB
data_source: {plugin: duckdb, options: {path: data}}
channels:
  email: {plugin: outbox, kind: email, cost: 0.1}
promo_pools:
  welcome:
    generate: {prefix: HI, length: 6}
    size: 100
    expires: {days: 30}
  printed:
    import: {file: codes/printed.csv}
  shared:
    import: {file: codes/shared.txt}
    max_uses: unlimited
offer_sinks:
  pos: {plugin: offer_file, options: {path: out/offers.csv}}
"""
OFFERS = """\
version: 1
offers:
  hello:
    kind: fixed_discount
    amount: 300
    min_check: 2000
    valid: {days: 14}
    promo_codes: {pool: welcome}
  printed_ten:
    kind: percent_discount
    percent: 10
    promo_codes: {pool: printed}
  poster:
    kind: fixed_discount
    amount: 500
    valid: {from: "2026-12-01", to: "2026-12-12"}
    promo_codes: {pool: shared, per_customer: false}
  bonus:
    kind: bonus_points
    points: 500
    valid: {days: 7}
"""


def make_project(root: Path, project: str = PROJECT, offers: str = OFFERS, printed: int = 5) -> Path:
    (root / "codes").mkdir(parents=True, exist_ok=True)
    (root / "campaignctl.yaml").write_text(project)
    (root / "offers.yaml").write_text(offers)
    (root / "codes" / "printed.csv").write_text("code,batch\n" + "".join(f"PRN{n:04d},b1\n" for n in range(printed)))
    (root / "codes" / "shared.txt").write_text("POSTER500\n")
    return root


def test_pools_are_validated_with_file_line_and_column(tmp_path):
    make_project(tmp_path, offers=OFFERS.replace("{pool: welcome}", "{pool: welcom}"))
    messages = [str(d) for d in check_project(tmp_path).diagnostics]
    assert messages == ["offers.yaml:8:25: pool: unknown promo pool 'welcom' (did you mean 'welcome'?)"]
    make_project(tmp_path)
    (tmp_path / "codes" / "printed.csv").write_text("code\nA1\nA1\n")
    messages = [str(d) for d in check_project(tmp_path).diagnostics]
    assert messages == ["codes/printed.csv:3:1: promo_pools.printed: code 'A1' repeats line 2 "
                        "(one code per line; a .csv file has a header row and a `code` column)"]
    (tmp_path / "codes" / "printed.csv").unlink()
    messages = [str(d) for d in check_project(tmp_path).diagnostics]
    assert messages and messages[0].startswith("campaignctl.yaml:14:20: promo_pools.printed: codes/printed.csv: no such file")


def test_a_generated_pool_needs_room_for_its_size_and_an_odd_alphabet(tmp_path):
    make_project(tmp_path, PROJECT.replace("size: 100", "size: 1000000000"))
    messages = [str(d) for d in check_project(tmp_path).diagnostics]
    assert any(m.startswith("campaignctl.yaml:11:11: promo_pools.welcome:") and "set generate.length to at least 9" in m
               for m in messages), messages
    make_project(tmp_path, PROJECT.replace("{prefix: HI, length: 6}", "{prefix: HI, alphabet: ABCDEFGH}"))
    messages = [str(d) for d in check_project(tmp_path).diagnostics]
    assert any("campaignctl.yaml:10:38" in m and "odd number of characters (this one has 8)" in m for m in messages), messages


def test_a_shared_code_needs_a_pool_of_reusable_codes(tmp_path):
    make_project(tmp_path, PROJECT.replace("    max_uses: unlimited\n", ""))
    messages = [str(d) for d in check_project(tmp_path).diagnostics]
    assert any(m.startswith("offers.yaml:17:47:") and "allows each code to be used once" in m for m in messages), messages


def test_a_pool_has_exactly_one_source(tmp_path):
    make_project(tmp_path, PROJECT.replace("    import: {file: codes/shared.txt}\n", ""))
    messages = [str(d) for d in check_project(tmp_path).diagnostics]
    assert any("promo_pools.shared: a pool has either `generate` or `import`" in m for m in messages), messages


def test_validity_comes_from_the_pool_then_the_offer(tmp_path):
    project = load_project(make_project(tmp_path))
    pools, offers = project.promo_pools, project.offers
    assert validity(project, offers["hello"], pools["welcome"], NOW) == (date(2026, 12, 1), date(2026, 12, 31))
    assert validity(project, offers["poster"], pools["shared"], NOW) == (date(2026, 12, 1), date(2026, 12, 12))
    assert validity(project, offers["printed_ten"], pools["printed"], NOW) == (date(2026, 12, 1), date(2026, 12, 15))  # 14 days


# --------------------------------------------------------------------------- state stores


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path) -> StateStore:
    if request.param == "sqlite":
        opened = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
    else:
        dsn, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("postgres_schema")
        opened = plugins.registry().state_stores["pgstate"](PluginConfig("pgstate", {"dsn": dsn, "schema": schema}), tmp_path)
    yield opened
    opened.close()


def test_a_code_is_held_once_per_pool_and_a_holder_holds_one(store):
    assert store.hold_promo_codes("p", {"a": "C1", "b": "C2"}) == {"a": "C1", "b": "C2"}
    # C1 is taken (c gets nothing), a keeps its code, d gets C3; another pool may hold C1.
    assert store.hold_promo_codes("p", {"c": "C1", "a": "C9", "d": "C3"}) == {"a": "C1", "d": "C3"}
    assert store.hold_promo_codes("q", {"c": "C1"}) == {"c": "C1"}
    assert store.promo_codes("p") == {"a": "C1", "b": "C2", "d": "C3"}


def test_issued_offers_keep_pool_expiry_and_terms_and_export_marks(store):
    expires = datetime(2026, 12, 31, 21, 0, tzinfo=timezone.utc)
    offers = [IssuedOffer(f"c/{n}/o", "c", str(n), "o", f"CODE{n}", NOW, "issued", "p", expires, {"kind": "gift", "gift": "candle"})
              for n in range(5)]
    assert store.issue_offers(offers) == [o.key for o in offers]
    assert store.issue_offers(offers) == []
    (first,) = store.issued_offers_by_key(["c/3/o", "nope"])
    assert (first.code, first.pool, first.expires_at, dict(first.terms)) == ("CODE3", "p", expires, {"kind": "gift", "gift": "candle"})
    page = store.unexported_offers("pos", None, 2)
    assert [o.key for o in page] == ["c/0/o", "c/1/o"]
    store.mark_offers_exported("pos", ["c/0/o", "c/1/o", "c/3/o"])
    assert [o.key for o in store.unexported_offers("pos", None, 10)] == ["c/2/o", "c/4/o"]
    assert [o.key for o in store.unexported_offers("pos", "c/2/o", 10)] == ["c/4/o"]
    assert len(store.unexported_offers("loyalty", None, 10)) == 5  # each sink has its own record


# --------------------------------------------------------------------------- issuing


@dataclass(frozen=True)
class Carried:
    """What issuing reads of a planned message."""

    campaign: str
    customer_id: int
    offer: str | None


def test_issuing_gives_each_customer_one_code_once(tmp_path):
    project = load_project(make_project(tmp_path))
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
    try:
        messages = [Carried("welcome", n, "hello") for n in range(40)] + [Carried("welcome", 3, "hello"), Carried("welcome", 7, None)]
        with store.atomically():
            new = issue_offers(store, project, messages, NOW)
        assert len(new) == 40
        codes = issued_codes(store, project, messages)
        assert len(set(codes.values())) == 40 and all(project_format_ok(project, code) for code in codes.values())
        (row,) = store.issued_offers_by_key(["welcome/3/hello"])
        assert row.expires_at == datetime(2026, 12, 31, 21, 0, tzinfo=timezone.utc)  # the end of Dec 31 in Moscow
        assert dict(row.terms)["valid_until"] == "2026-12-31" and dict(row.terms)["max_uses"] == 1
        assert issue_offers(store, project, messages, NOW) == []  # a rerun issues nothing
        assert issued_codes(store, project, messages) == codes
        # Another campaign with the same offer: new codes.
        issue_offers(store, project, [Carried("activation", 3, "hello")], NOW)
        assert issued_codes(store, project, [Carried("activation", 3, "hello")])["activation/3/hello"] not in codes.values()
    finally:
        store.close()


def project_format_ok(project, code: str) -> bool:
    from campaignctl.promocodes import pool_format

    return pool_format(project.promo_pools["welcome"]).is_well_formed(code)


def test_imported_codes_go_out_in_file_order_and_run_out(tmp_path):
    project = load_project(make_project(tmp_path, printed=3))
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
    try:
        issue_offers(store, project, [Carried("c", n, "printed_ten") for n in (5, 6)], NOW)
        assert issued_codes(store, project, [Carried("c", n, "printed_ten") for n in (5, 6)]) == {"c/5/printed_ten": "PRN0000", "c/6/printed_ten": "PRN0001"}
        with pytest.raises(PoolExhausted, match="has 1 code"), store.atomically():
            issue_offers(store, project, [Carried("c", n, "printed_ten") for n in (7, 8)], NOW)
        assert store.promo_codes("printed") == {"c/5/printed_ten": "PRN0000", "c/6/printed_ten": "PRN0001"}  # rolled back whole
    finally:
        store.close()


def test_a_shared_code_and_bonus_accruals(tmp_path):
    project = load_project(make_project(tmp_path))
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
    try:
        issue_offers(store, project, [Carried("malls", n, "poster") for n in range(3)] + [Carried("bonus", 1, "bonus")], NOW)
        codes = issued_codes(store, project, [Carried("malls", n, "poster") for n in range(3)])
        assert set(codes.values()) == {"POSTER500"} and len(codes) == 3
        assert store.promo_codes("shared") == {shared_holder("malls", "poster"): "POSTER500"}
        (accrual,) = store.issued_offers_by_key(["bonus/1/bonus"])
        assert accrual.code is None and dict(accrual.terms)["points"] == 500
    finally:
        store.close()


# --------------------------------------------------------------------------- offer sinks


def exported_offer(n: int, code: str | None = None) -> ExportedOffer:
    return ExportedOffer(f"c/{n}/o", "c", str(n), "o", "fixed_discount", code or f"CODE{n}", "p", NOW.isoformat(),
                         "2026-12-01", "2026-12-15", 1, {"amount": 300, "title": "300 ₽ off, \"now\"\nand later"})


def test_hook_register_offer_sinks(tmp_path):
    taken: list[ExportedOffer] = []

    class MemorySink:
        def export(self, offers):
            taken.extend(offers)

        def close(self):
            pass

    class Plugin:
        @hookimpl
        def register_offer_sinks(self, register):
            register("memory", lambda config, root: MemorySink())

    plugins.register_plugin(Plugin(), name="memory-sink")
    sink = plugins.registry().offer_sinks["memory"](OfferSinkConfig("memory", {}, name="m"), tmp_path)
    assert isinstance(sink, OfferSink)
    assert {"offer_file", "offer_webhook"} <= set(plugins.registry().offer_sinks)
    sink.export([exported_offer(1)])
    assert taken[0].code == "CODE1"


def file_sink(tmp_path: Path, path: str):
    return plugins.registry().offer_sinks["offer_file"](OfferSinkConfig("offer_file", {"path": path}, name="pos"), tmp_path)


def test_the_csv_sink_skips_keys_it_holds_and_cuts_a_torn_line(tmp_path):
    sink = file_sink(tmp_path, "out/offers.csv")
    sink.export([exported_offer(n) for n in range(3)])
    path = tmp_path / "out" / "offers.csv"
    with path.open("ab") as torn:  # a write killed midway
        torn.write(b"c/3/o,c,3,o,fixed_disc")
    again = file_sink(tmp_path, "out/offers.csv")  # a new run reads what the file holds
    again.export([exported_offer(n) for n in range(5)])
    rows = list(csv.DictReader(path.open(newline="")))
    assert [row["key"] for row in rows] == ["c/0/o", "c/1/o", "c/2/o", "c/3/o", "c/4/o"]
    assert json.loads(rows[0]["terms"])["title"] == "300 ₽ off, \"now\"\nand later"
    assert rows[0]["max_uses"] == "1" and rows[0]["valid_until"] == "2026-12-15"


def test_the_parquet_sink_writes_whole_parts_once(tmp_path):
    import pyarrow.dataset as ds

    sink = file_sink(tmp_path, "out/offers.parquet")
    sink.export([exported_offer(n) for n in range(3)])
    (tmp_path / "out" / "offers.parquet" / ".part-000009-dead.tmp").write_bytes(b"PAR1 torn")
    again = file_sink(tmp_path, "out/offers.parquet")
    again.export([exported_offer(n) for n in range(5)])
    again.export([exported_offer(n) for n in range(5)])
    table = ds.dataset(tmp_path / "out" / "offers.parquet").to_table()
    assert sorted(table.column("key").to_pylist()) == [f"c/{n}/o" for n in range(5)]
    assert not list((tmp_path / "out" / "offers.parquet").glob(".*.tmp"))


class Receiver(BaseHTTPRequestHandler):
    """A loyalty system: checks the wire format, keeps offers by key, fails on request."""

    offers: dict = {}
    requests: list = []
    fail_next: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).requests.append((self.headers, body))  # an email.message.Message: names case-insensitive
        if self.fail_next:
            status = self.fail_next.pop(0)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "try later"}' if status >= 500 else b'{"error": "unknown offer kind"}')
            return
        payload = json.loads(body)
        for offer in payload["offers"]:
            type(self).offers.setdefault(offer["key"], offer)  # idempotent by key
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.offers, Receiver.requests, Receiver.fail_next = {}, [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/offers"
    server.shutdown()
    server.server_close()


def test_the_webhook_sink_posts_json_batches_with_credentials_and_retries(tmp_path, receiver):
    config = OfferSinkConfig("offer_webhook", {"url": receiver, "headers": {"Authorization": "Bearer s3cret"}, "batch_size": 2}, name="loyalty")
    sink = plugins.registry().offer_sinks["offer_webhook"](config, tmp_path)
    sink.sleep = lambda seconds: None
    Receiver.fail_next = [503]
    try:
        sink.export([exported_offer(n) for n in range(5)])
        sink.export([exported_offer(n) for n in range(5)])  # handed over again after a "crash": a no-op for the receiver
    finally:
        sink.close()
    assert sorted(Receiver.offers) == [f"c/{n}/o" for n in range(5)]
    headers, body = Receiver.requests[-1]
    assert headers["Authorization"] == "Bearer s3cret" and headers["Content-Type"] == "application/json"
    assert len(headers["Idempotency-Key"]) == 64
    offer = json.loads(body)["offers"][0]
    assert set(offer) == {"key", "campaign", "customer_id", "offer", "kind", "code", "pool", "issued_at", "valid_from", "valid_until",
                          "max_uses", "terms"}
    assert Receiver.offers["c/2/o"]["code"] == "CODE2" and Receiver.offers["c/2/o"]["terms"]["amount"] == 300
    assert len(Receiver.requests) == 3 + 1 + 3  # 3 batches, one retried after the 503, then 3 again


def test_a_failing_sink_stops_the_export_naming_it_without_secrets(tmp_path, receiver):
    store = plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), tmp_path)
    config = OfferSinkConfig("offer_webhook", {"url": receiver, "headers": {"Authorization": "Bearer s3cret"}}, name="loyalty")
    sink = plugins.registry().offer_sinks["offer_webhook"](config, tmp_path)
    try:
        store.issue_offers([IssuedOffer(f"c/{n}/o", "c", str(n), "o", f"CODE{n}", NOW, "issued", "p") for n in range(3)])
        Receiver.fail_next = [400]
        with pytest.raises(Exception, match="offer sink 'loyalty' failed after exporting 0 offer") as failure:
            export_offers(store, {"loyalty": sink})
        assert "unknown offer kind" in str(failure.value) and "s3cret" not in str(failure.value)
        assert export_offers(store, {"loyalty": sink}) == {"loyalty": 3}  # the next run exports them
        assert export_offers(store, {"loyalty": sink}) == {"loyalty": 0}
    finally:
        sink.close()
        store.close()
