"""The channel contract: one harness every channel sender runs through.

Each channel plugin (every one in channel_peers.PEERS, which must hold every
built-in: see the last test) is created through ``campaignctl.plugins.registry()``
as a project would get it, with messages shaped for its channel kind
(``MESSAGES``), talks to its real local peer (a file, an aiosmtpd server, an
SMSC, HTTP servers speaking the providers' APIs) and must:

- answer one SendResult per message, in order, with the messages' keys;
- give a message with a bad address a permanent failure without breaking the batch;
- really hand over every message it reports sent (the peer has it);
- keep working across batches, and close() safely, twice;
- refuse an unknown option with an error naming it.
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest

from campaignctl.contracts import ChannelSender, OutgoingMessage
from campaignctl.model import Channel
from campaignctl.plugins import registry

from .channel_peers import PEERS, ChannelUnderTest


@pytest.fixture(params=sorted(PEERS))
def channel(request, tmp_path) -> ChannelUnderTest:
    with PEERS[request.param](tmp_path) as under_test:
        yield under_test


ROOT = Path(__file__).resolve().parents[2]


def open_sender(channel: ChannelUnderTest, root: Path, options: dict | None = None) -> ChannelSender:
    config = Channel(channel.kind, channel.plugin, channel.kind, 0.15, channel.options if options is None else options)
    return registry().channels[channel.plugin](config, root)


# What a template of each channel kind renders (docs/format.md, "Templates"): the
# parts, and metadata where a kind needs it. The link carries the message key.

def email_message(key: str, n: int) -> tuple[dict, dict]:
    return ({"subject": f"Анна, мы скучаем — {n}", "text": "Ваша скидка 10% ждёт вас.\n", "html": "<p>Ваша скидка <b>10%</b> ждёт вас.</p>"},
            {"list_unsubscribe": [f"https://uyut.example/u/{n}", "mailto:unsubscribe@uyut.example"]})


def sms_message(key: str, n: int) -> tuple[dict, dict]:
    return {"body": f"Анна, скидка 10% до воскресенья: https://uyut.example/s?m={key}"}, {}  # Cyrillic: UCS-2, 2 parts


def push_message(key: str, n: int) -> tuple[dict, dict]:
    return {"title": "Анна, мы скучаем", "body": f"Ваша скидка 10% ждёт вас — {n}", "url": f"https://uyut.example/p?m={key}"}, {}


def telegram_message(key: str, n: int) -> tuple[dict, dict]:
    return ({"body": "Anna, your Uyut points expire at midnight today.", "url": f"https://uyut.example/bonus?m={key}"},
            {"template": "bonus_telegram"})


def whatsapp_message(key: str, n: int) -> tuple[dict, dict]:
    url = f"https://uyut.example/game?m={key}"  # fits the approved template (messenger_peers.TEMPLATES)
    return {"body": f"Anna, a prize is waiting for you at Uyut: pick one of three boxes {url}", "url": url}, {"template": "game_whatsapp"}


def web_layer_message(key: str, n: int) -> tuple[dict, dict]:
    return {"title": "Рады видеть вас снова!", "body": "Ваша подборка готова.", "button": "Показать",
            "url": f"https://uyut.example/for-you?m={key}"}, {}


MESSAGES: dict[str, Callable[[str, int], tuple[dict, dict]]] = {
    "email": email_message, "sms": sms_message, "push": push_message, "web_push": push_message,
    "telegram": telegram_message, "whatsapp": whatsapp_message, "web_layer": web_layer_message,
}


def message(channel: ChannelUnderTest, n: int) -> OutgoingMessage:
    key = f"winback/v3/{n}/0/2026-11-24"
    parts, metadata = MESSAGES[channel.kind](key, n)
    return OutgoingMessage(key, "winback", str(n), channel.kind, channel.address(n), parts, metadata)


def refused_message(channel: ChannelUnderTest, n: int) -> OutgoingMessage:
    """Message ``n`` to the channel's bad address, for a customer (900) who has
    no other (a Telegram bot cannot write to them). A web layer has no address:
    what it refuses is a layer without a body."""
    good = message(channel, n)
    if channel.bad_address is None:
        return replace(good, parts={name: text for name, text in good.parts.items() if name != "body"})
    return replace(good, customer_id="900", to=channel.bad_address)


def test_a_batch_gets_one_result_per_message_in_order_and_the_peer_has_them(channel, tmp_path):
    sender = open_sender(channel, tmp_path)
    batch = [message(channel, n) for n in range(5)]
    try:
        results = sender.send(batch)
    finally:
        sender.close()
    assert isinstance(sender, ChannelSender)
    assert [r.key for r in results] == [m.key for m in batch]
    assert {r.status for r in results} == {"sent"}, results
    assert all(r.provider_id for r in results)
    assert sorted(channel.received_keys()) == sorted(m.key for m in batch)


def test_a_bad_address_fails_alone_without_breaking_the_batch(channel, tmp_path):
    sender = open_sender(channel, tmp_path)
    batch = [message(channel, 1), refused_message(channel, 2), message(channel, 3)]
    try:
        results = sender.send(batch)
    finally:
        sender.close()
    assert [r.key for r in results] == [m.key for m in batch]
    assert [r.status for r in results] == ["sent", "permanent_failure", "sent"]
    assert results[1].error and results[1].provider_id is None
    assert sorted(channel.received_keys()) == sorted([batch[0].key, batch[2].key])


def test_the_sender_serves_several_batches_and_closes_safely_twice(channel, tmp_path):
    sender = open_sender(channel, tmp_path)
    first = sender.send([message(channel, n) for n in range(3)])
    second = sender.send([message(channel, n) for n in range(3, 6)])
    sender.close()
    sender.close()
    assert [r.status for r in first + second] == ["sent"] * 6
    assert len(channel.received_keys()) == 6
    assert sender.send([]) == []


def test_an_empty_batch_sends_nothing(channel, tmp_path):
    sender = open_sender(channel, tmp_path)
    assert sender.send([]) == []
    sender.close()
    assert channel.received_keys() == []


def test_an_unknown_option_is_refused_by_name(channel, tmp_path):
    typo, meant = _typo(channel.options)
    with pytest.raises(ValueError) as caught:
        open_sender(channel, tmp_path, {**channel.options, typo: "x"})
    assert f"unknown option(s) {typo!r} (did you mean {meant!r}?)" in str(caught.value)


def _typo(options: dict) -> tuple[str, str]:
    """A misspelling of one of the channel's own options, and that option."""
    for name, typo in (("path", "pathh"), ("host", "hots"), ("url", "ulr"), ("base_url", "base_ulr"), ("timeout", "timout")):
        if name in options:
            return typo, name
    raise AssertionError(f"no option to misspell in {sorted(options)}")


def built_in_channel_plugins() -> dict[str, str]:
    """channel name -> the module registering it, for every module that
    pyproject.toml declares as a campaignctl plugin (built-ins are plugins too)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["campaignctl"]
    found: dict[str, str] = {}
    for module_name in declared.values():
        hook = getattr(importlib.import_module(module_name), "register_channels", None)
        if hook is not None:
            hook(lambda name, factory, module=module_name: found.setdefault(name, module))
    return found


def test_every_built_in_channel_plugin_runs_through_the_contract():
    channels = built_in_channel_plugins()
    missing = sorted(f"{name} ({module})" for name, module in channels.items() if name not in PEERS)
    assert not missing, f"channel plugin(s) without a peer in tests/contract/channel_peers.PEERS: {', '.join(missing)}"
    assert set(channels) <= set(registry().channels)  # and each is installed under its entry point
    assert {"outbox", "smtp", "sms_http", "smpp", "fcm", "apns", "web_push", "telegram", "whatsapp", "web_layer"} <= set(channels)


def test_every_channel_kind_has_a_message_shape():
    """A channel kind the schema allows and the harness cannot shape a message
    for would leave a new plugin of that kind untested."""
    import json

    kinds = json.loads((ROOT / "schemas" / "v1" / "common.json").read_text())["$defs"]["channel_kind"]["enum"]
    assert sorted(MESSAGES) == sorted(kinds)
