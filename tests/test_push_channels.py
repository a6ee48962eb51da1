"""The push channels against their real local peers (tests/contract/push_peers.py):
FCM HTTP v1 with its OAuth token exchange, APNs over HTTP/2 with TLS, and Web
Push with VAPID and aes128gcm, each peer checking signatures with the public
keys and, for Web Push, decrypting the payload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from contract.push_peers import apns_peer, device_token, fcm_peer, web_push_options, web_push_peer

from campaignctl.contracts import OutgoingMessage
from campaignctl.model import Channel
from campaignctl.plugins import registry


def open_channel(plugin: str, options: dict, root: Path, kind: str = "push"):
    return registry().channels[plugin](Channel("push", plugin, kind, 0.01, options), root)


def push(n: int, to: str, **metadata) -> OutgoingMessage:
    return OutgoingMessage(
        f"cart/v2/{n}/0/20261124T0900Z", "abandoned_cart", str(n), "push", to,
        {"title": f"Анна, корзина ждёт — {n}", "body": "Скидка 10% до воскресенья", "url": f"https://uyut.example/cart?n={n}"},
        metadata,
    )


# --- FCM --------------------------------------------------------------------------


def test_fcm_exchanges_a_signed_assertion_for_a_token_once_and_sends_each_message(tmp_path):
    with fcm_peer() as peer:
        sender = open_channel("fcm", peer.options(tmp_path), tmp_path)
        first = sender.send([push(n, f"tok-{n}") for n in range(3)])
        second = sender.send([push(n, f"tok-{n}") for n in range(3, 5)])
        sender.close()
    assert [r.status for r in first + second] == ["sent"] * 5
    assert first[0].provider_id.startswith("projects/uyut-app/messages/")
    assert len(peer.issued) == 1  # the access token is cached across batches
    sent = {m["token"]: m for m in peer.messages()}
    assert sent["tok-2"]["notification"] == {"title": "Анна, корзина ждёт — 2", "body": "Скидка 10% до воскресенья"}
    assert sent["tok-2"]["data"] == {"campaign": "abandoned_cart", "message_key": "cart/v2/2/0/20261124T0900Z", "url": "https://uyut.example/cart?n=2"}


def test_fcm_takes_the_service_account_json_from_the_environment_value(tmp_path):
    with fcm_peer() as peer:
        options = {**peer.options(tmp_path), "service_account": json.dumps(peer.service_account())}
        sender = open_channel("fcm", options, tmp_path)
        assert sender.send([push(1, "tok-1")])[0].status == "sent"
        sender.close()


def test_fcm_unregistered_token_is_permanent_and_marked_invalid_and_a_refused_access_token_is_renewed(tmp_path):
    with fcm_peer() as peer:
        sender = open_channel("fcm", peer.options(tmp_path), tmp_path)
        gone, ok = sender.send([push(1, "gone-1"), push(2, "tok-2")])
        peer.revoked.update(peer.issued)  # the access token is revoked at Google
        refused = sender.send([push(3, "tok-3")])[0]
        retried = sender.send([push(3, "tok-3")])[0]
        sender.close()
    assert (gone.status, gone.address_invalid) == ("permanent_failure", True)
    assert "UNREGISTERED" in gone.error
    assert ok.status == "sent" and not ok.address_invalid
    assert refused.status == "temporary_failure" and retried.status == "sent"
    assert len(peer.issued) == 2


def test_fcm_with_a_key_the_token_endpoint_does_not_know_fails_temporarily_without_leaking_it(tmp_path):
    with fcm_peer() as peer, fcm_peer() as other:
        account = {**other.service_account(), "token_uri": peer.token_uri}  # signed with another key
        sender = open_channel("fcm", {**peer.options(tmp_path), "service_account": json.dumps(account)}, tmp_path)
        result = sender.send([push(1, "tok-1")])[0]
        sender.close()
    assert result.status == "temporary_failure"
    assert "invalid_grant" in result.error and "PRIVATE KEY" not in result.error
    assert peer.accepted == []


def test_fcm_bad_options_are_refused_with_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="option 'service_account' is required"):
        open_channel("fcm", {}, tmp_path)
    with pytest.raises(ValueError, match=r"no such file .*missing.json"):
        open_channel("fcm", {"service_account": "missing.json"}, tmp_path)
    (tmp_path / "partial.json").write_text('{"client_email": "x@y", "private_key": "-----BEGIN PRIVATE KEY-----secret"}')
    with pytest.raises(ValueError, match="lacks token_uri") as caught:
        open_channel("fcm", {"service_account": "partial.json"}, tmp_path)
    assert "secret" not in str(caught.value)


# --- APNs -------------------------------------------------------------------------


def test_apns_speaks_http2_with_a_valid_provider_token_headers_and_payload(tmp_path):
    with apns_peer(tmp_path) as peer:
        sender = open_channel("apns", peer.options(tmp_path), tmp_path)
        results = sender.send([push(n, device_token(n), collapse_id="cart") for n in range(4)])
        again = sender.send([push(9, device_token(9))])
        sender.close()
    assert [r.status for r in results + again] == ["sent"] * 5
    assert {r.http_version for r in peer.requests} == {"HTTP/2"}
    assert len(peer.provider_tokens) == 1  # one provider token reused across batches
    first = next(r for r in peer.requests if r.path == f"/3/device/{device_token(0)}")
    assert first.headers["apns-topic"] == "example.uyut.app" and first.headers["apns-push-type"] == "alert"
    assert first.headers["apns-priority"] == "10" and first.headers["apns-collapse-id"] == "cart"
    assert results[0].provider_id == first.headers["apns-id"]
    assert json.loads(first.body)["aps"] == {"alert": {"title": "Анна, корзина ждёт — 0", "body": "Скидка 10% до воскресенья"}}


def test_apns_id_is_derived_from_the_idempotency_key_so_a_retry_carries_the_same_id(tmp_path):
    with apns_peer(tmp_path) as peer:
        peer.faults.append((503, {}, {"reason": "ServiceUnavailable"}))
        sender = open_channel("apns", peer.options(tmp_path), tmp_path)
        failed = sender.send([push(1, device_token(1))])[0]
        sent = sender.send([push(1, device_token(1))])[0]
        sender.close()
    assert failed.status == "temporary_failure" and sent.status == "sent"
    assert peer.requests[0].headers["apns-id"] == peer.requests[1].headers["apns-id"] == sent.provider_id


def test_apns_unregistered_is_permanent_and_invalid_and_a_bad_token_is_permanent(tmp_path):
    with apns_peer(tmp_path) as peer:
        sender = open_channel("apns", peer.options(tmp_path), tmp_path)
        gone, bad, ok = sender.send([push(1, "gone01"), push(2, "bad02"), push(3, device_token(3))])
        sender.close()
    assert (gone.status, gone.address_invalid, gone.error) == ("permanent_failure", True, "APNs 410 Unregistered")
    assert (bad.status, bad.address_invalid, bad.error) == ("permanent_failure", False, "APNs 400 BadDeviceToken")
    assert ok.status == "sent"


def test_apns_key_signed_by_another_team_is_refused(tmp_path):
    with apns_peer(tmp_path) as peer:
        sender = open_channel("apns", {**peer.options(tmp_path), "team_id": "OTHERTEAM1"}, tmp_path)
        result = sender.send([push(1, device_token(1))])[0]
        sender.close()
    assert (result.status, result.error) == ("permanent_failure", "APNs 403 InvalidProviderToken")


# --- Web Push ---------------------------------------------------------------------


def test_web_push_encrypts_each_payload_for_its_subscription_and_signs_vapid_for_the_service(tmp_path):
    with web_push_peer() as peer:
        subscriptions = [peer.subscribe(f"browser{n}") for n in range(3)]
        sender = open_channel("web_push", web_push_options(tmp_path, peer), tmp_path, kind="web_push")
        results = sender.send([push(n, s.as_json()) for n, s in enumerate(subscriptions)])
        sender.close()
    assert [r.status for r in results] == ["sent"] * 3
    assert results[0].provider_id == "1" or results[0].provider_id.isdigit()
    by_key = {p["key"]: p for p in peer.payloads}
    assert by_key[push(1, "").key] == {"title": "Анна, корзина ждёт — 1", "body": "Скидка 10% до воскресенья",
                                       "url": "https://uyut.example/cart?n=1", "key": push(1, "").key}
    assert all(r.headers["content-encoding"] == "aes128gcm" and b"Anna" not in r.body for r in peer.requests)


def test_web_push_gone_subscription_is_permanent_and_invalid_and_a_bare_url_is_explained(tmp_path):
    with web_push_peer() as peer:
        alive, expired = peer.subscribe("alive"), peer.subscribe("expired")
        peer.gone.add("/wp/expired")
        sender = open_channel("web_push", web_push_options(tmp_path, peer), tmp_path, kind="web_push")
        ok, gone, bare = sender.send([push(1, alive.as_json()), push(2, expired.as_json()), push(3, "https://push.example.com/wp/abc")])
        sender.close()
    assert ok.status == "sent"
    assert (gone.status, gone.address_invalid) == ("permanent_failure", True)
    assert bare.status == "permanent_failure" and "PushSubscription JSON" in bare.error


def test_web_push_with_a_key_the_site_did_not_publish_is_refused_by_the_service(tmp_path):
    with web_push_peer() as peer:
        subscription = peer.subscribe("b")
        options = web_push_options(tmp_path, peer)
        peer.vapid_public = "another-key"
        sender = open_channel("web_push", options, tmp_path, kind="web_push")
        result = sender.send([push(1, subscription.as_json())])[0]
        sender.close()
    assert result.status == "permanent_failure" and "unknown application server key" in result.error
    assert peer.accepted == []


def test_a_demo_customers_web_push_subscription_is_one_the_channel_can_encrypt_for(tmp_path):
    import hashlib

    import pyarrow as pa
    from contract.push_peers import Subscription

    from campaignctl.demo_data import _web_push_subscriptions, demo_web_push_key

    contact = json.loads(_web_push_subscriptions(pa.array(["3c0ffee0000000000000beef"]))[0].as_py())
    assert contact["endpoint"] == "https://push.example.com/wp/3c0ffee0000000000000beef"
    with web_push_peer() as peer:
        contact["endpoint"] = f"{peer.server.base_url}/wp/demo"  # the demo's push service, here on localhost
        auth = hashlib.sha256(b"campaignctl demo auth 3").digest()[:16]
        peer.subscriptions["/wp/demo"] = Subscription(contact["endpoint"], demo_web_push_key(3), auth)
        sender = open_channel("web_push", web_push_options(tmp_path, peer), tmp_path, kind="web_push")
        result = sender.send([push(1, json.dumps(contact))])[0]
        sender.close()
    assert result.status == "sent" and peer.payloads[0]["title"] == "Анна, корзина ждёт — 1"


@pytest.mark.parametrize("plugin,option", [("fcm", "base_url"), ("apns", "topic"), ("web_push", "vapid_subject")])
def test_an_unknown_option_is_refused_by_name(plugin, option, tmp_path):
    with pytest.raises(ValueError, match=rf"unknown option\(s\) '{option}x' \(did you mean '{option}'\?\)"):
        open_channel(plugin, {f"{option}x": "x"}, tmp_path)
