"""Web layers end to end: messages delivered (campaignctl.delivery, a SQLite
state store) to the web_layer channel publish rules; the HTTP app serves them
under uvicorn; a shop page on another local server includes the snippet; Debian
chromium, headless, visits it. Impressions and clicks come back as outcomes."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from campaignctl import plugins
from campaignctl.contracts import OutgoingMessage
from campaignctl.delivery import DueMessage, deliver
from campaignctl.model import Channel, PluginConfig
from campaignctl.weblayer import visitor_token
from campaignctl.weblayer_app import WebLayerApp

SECRET = "test-web-layer-secret"
# Per campaign: how each layer is displayed (channel options -> rules).
CAMPAIGNS = {
    "visited": {"per_session": 1, "per_day": 2, "priority": 5},
    "game": {"priority": 10},
    "leaving": {"trigger": "exit"},
    "later": {"trigger": "delay", "seconds": 1},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def layer(campaign: str, customer: int, title: str, url: str) -> DueMessage:
    parts = {"title": title, "body": f"Body of {campaign} for {customer}", "button": "Show me", "url": url}
    return DueMessage(OutgoingMessage(f"{campaign}/v1/{customer}/0/w1", campaign, str(customer), "web_layer", str(customer), parts), 0, 0.0)


# --------------------------------------------------------------------------- unit: publishing


def sqlite_store(root: Path):
    return plugins.registry().state_stores["sqlite"](PluginConfig("sqlite", {}), root)


def weblayer_sender(root: Path, **options):
    options = {"path": str(root / "layers"), "secret": SECRET, **options}
    return plugins.registry().channels["web_layer"](Channel("web_layer", "web_layer", "web_layer", 0.0, options), root)


def test_publishing_writes_one_file_per_visitor_and_again_replaces_by_key(tmp_path):
    sender = weblayer_sender(tmp_path, campaigns=CAMPAIGNS)
    first = layer("visited", 1, "Hello, <b>Anna</b>", "https://shop.example/picks")
    assert [r.status for r in sender.send([first.message, first.message])] == ["sent", "sent"]
    published = json.loads((tmp_path / "layers" / "visitors" / f"{visitor_token(SECRET, 1)}.json").read_text())
    assert [(x["key"], x["content"]["title"], x["caps"], x["priority"]) for x in published["layers"]] == [
        (first.key, "Hello, <b>Anna</b>", {"per_session": 1, "per_day": 2}, 5)]
    assert str(1) not in [p.stem for p in (tmp_path / "layers" / "visitors").iterdir()]  # files are named by token, not id
    assert sender.lookup([first.key, "visited/v1/2/0/w1"]) == {first.key: f"weblayer:{first.key}", "visited/v1/2/0/w1": None}
    empty = OutgoingMessage("visited/v1/9/0/w1", "visited", "9", "web_layer", "9", {"title": "no body"})
    assert sender.send([empty])[0].status == "permanent_failure"


def test_bad_options_are_refused_with_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="options.secret"):
        plugins.registry().channels["web_layer"](Channel("web_layer", "web_layer", "web_layer", 0.0, {}), tmp_path)
    with pytest.raises(ValueError, match="did you mean 'per_day'"):
        weblayer_sender(tmp_path, per_dya=2)
    with pytest.raises(ValueError, match="trigger 'popup' is not one of load, exit, delay"):
        weblayer_sender(tmp_path, campaigns={"x": {"trigger": "popup"}})


# --------------------------------------------------------------------------- in chromium


class Shop(http.server.ThreadingHTTPServer):
    """The retailer's site: /as/TOKEN/... is a signed-in visitor, anything else anonymous."""

    daemon_threads = True
    layers_url = ""


class ShopPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server name
        path = urlsplit(self.path).path
        visitor = path.split("/")[2] if path.startswith("/as/") else ""
        attribute = f' data-visitor="{visitor}"' if visitor else ""
        page = (f"<!doctype html><html><head><title>Uyut</title></head><body><h1>Uyut shop</h1>"
                f'<script async src="{self.server.layers_url}/snippet.js"{attribute}></script></body></html>')
        body = page.encode()
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Delivered messages, the layers app under uvicorn, the shop, and a store to read outcomes from."""
    from browser import CHROMIUM
    from conftest import skip_unless_ci

    if CHROMIUM is None:
        skip_unless_ci("Debian chromium is not installed (apt-get install chromium)")
    import uvicorn

    root = tmp_path_factory.mktemp("weblayer")
    shop = Shop(("127.0.0.1", 0), ShopPage)
    shop_url = f"http://127.0.0.1:{shop.server_address[1]}"
    store = sqlite_store(root)
    sms = plugins.registry().channels["outbox"](Channel("sms", "outbox", "sms", 2.9, {}), root)
    sms_message = OutgoingMessage("game/v1/2/1/w1", "game", "2", "sms", "+79990000002", {"body": "Pick your prize"})
    messages = [
        layer("visited", 1, "Glad to see you again, Anna!", f"{shop_url}/picks"),
        layer("game", 2, "Pick your prize", f"{shop_url}/game"),
        layer("visited", 3, "Capped", f"{shop_url}/picks"),
        layer("leaving", 4, "Leaving already?", f"{shop_url}/stay"),
        layer("later", 5, "Still here?", f"{shop_url}/later"),
        DueMessage(sms_message, 1, 2.9),
    ]
    report = deliver(store, {"web_layer": weblayer_sender(root, campaigns=CAMPAIGNS), "sms": sms}, messages)
    assert report.total("sent") == len(messages)

    worker = ThreadPoolExecutor(max_workers=1)  # the app's store lives in the app's thread, as under `campaignctl serve`
    app_store = worker.submit(sqlite_store, root).result()
    app = WebLayerApp(weblayer_sender(root).rules, app_store, prefix="/layers", worker=worker)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    threading.Thread(target=shop.serve_forever, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    Shop.layers_url = f"http://127.0.0.1:{port}/layers"
    yield {"shop": shop_url, "store": store, "root": root}
    server.should_exit = True
    thread.join(timeout=10)
    shop.shutdown()
    app.close()
    store.close()


@pytest.fixture
def chromium(tmp_path):
    from browser import browser

    with browser(tmp_path / "profile") as started:
        yield started


def outcome_types(store, key: str) -> set[str]:
    return {o.type for o in store.outcomes(key)}


def wait_for_outcome(store, key: str, kind: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while kind not in outcome_types(store, key):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {kind!r} outcome for {key}; have {outcome_types(store, key)}")
        time.sleep(0.05)


DECIDED = "document.documentElement.getAttribute('data-campaignctl-layer')"
LAYER_TITLE = "document.querySelector('#campaignctl-layer .campaignctl-layer-title')?.textContent"


def visit(chromium, url: str, tab=None):
    tab = tab or chromium.new_tab()
    tab.open(url)
    return tab, tab.wait_for(DECIDED)


def test_a_targeted_visitor_sees_the_layer_and_its_impression_and_click_become_outcomes(site, chromium):
    tab, decided = visit(chromium, f"{site['shop']}/as/{visitor_token(SECRET, 1)}/home")
    assert decided == "shown"
    assert tab.evaluate(LAYER_TITLE) == "Glad to see you again, Anna!"
    wait_for_outcome(site["store"], "visited/v1/1/0/w1", "opened")
    tab.evaluate("document.querySelector('#campaignctl-layer .campaignctl-layer-button').click()")
    tab.wait_for(f"location.href === {json.dumps(site['shop'] + '/picks')}")
    wait_for_outcome(site["store"], "visited/v1/1/0/w1", "clicked")


def test_a_visitor_without_layers_and_an_anonymous_one_see_nothing(site, chromium):
    tab, decided = visit(chromium, f"{site['shop']}/as/{visitor_token(SECRET, 77)}/home")
    assert decided == "none" and tab.evaluate("document.getElementById('campaignctl-layer') === null")
    tab, decided = visit(chromium, f"{site['shop']}/home", tab)
    assert decided == "none"


def test_caps_hold_across_reloads_sessions_and_the_day(site, chromium):
    url = f"{site['shop']}/as/{visitor_token(SECRET, 3)}/home"
    tab, decided = visit(chromium, url)
    assert decided == "shown"
    tab.call("Page.reload")
    tab.wait_for(f"{DECIDED} === 'capped'")  # once per session
    assert tab.evaluate("document.getElementById('campaignctl-layer') === null")
    second_session, decided = visit(chromium, url)  # a new tab is a new session; the day allows two
    assert decided == "shown"
    third_session, decided = visit(chromium, url)
    assert decided == "capped"


def test_a_visitor_arriving_by_the_sms_link_of_the_campaign_sees_its_layer(site, chromium):
    tab, decided = visit(chromium, f"{site['shop']}/game?m=game/v1/2/1/w1")  # the SMS's link, anonymous visitor
    assert decided == "shown" and tab.evaluate(LAYER_TITLE) == "Pick your prize"
    wait_for_outcome(site["store"], "game/v1/2/0/w1", "opened")
    tab, decided = visit(chromium, f"{site['shop']}/game?m=game/v1/3/1/w1")  # a key the ledger does not have
    assert decided == "none"


def test_exit_intent_and_delayed_layers_wait_for_their_trigger(site, chromium):
    tab, decided = visit(chromium, f"{site['shop']}/as/{visitor_token(SECRET, 4)}/home")
    assert decided == "armed" and tab.evaluate("document.getElementById('campaignctl-layer') === null")
    tab.evaluate("document.dispatchEvent(new MouseEvent('mouseout', {clientY: -5, relatedTarget: null, bubbles: true}))")
    assert tab.wait_for(LAYER_TITLE) == "Leaving already?"

    started = time.monotonic()
    tab, decided = visit(chromium, f"{site['shop']}/as/{visitor_token(SECRET, 5)}/home")
    assert decided == "armed"
    assert tab.wait_for(LAYER_TITLE) == "Still here?" and time.monotonic() - started >= 1.0


def test_events_must_carry_the_signature_of_a_layer_handed_out(site):
    import urllib.error
    import urllib.request

    events = f"{Shop.layers_url}/events"
    forged = json.dumps({"key": "leaving/v1/4/0/w1", "sig": "0" * 32, "type": "click"}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(events, data=forged, headers={"content-type": "text/plain"}), timeout=5)
    assert refused.value.code == 403 and "clicked" not in outcome_types(site["store"], "leaving/v1/4/0/w1")

