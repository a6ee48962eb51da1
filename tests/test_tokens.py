"""Signed link tokens: what a valid token says, and every way a token is refused."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaignctl.tokens import BAD_SIGNATURE, EXPIRED, MALFORMED, WRONG_PURPOSE, Rejected, TokenPayload, TokenSigner, derive_key

NOW = datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)
LATER = NOW + timedelta(days=60)
KEY = "winback/3f2a9c/1042/0/2026-12-01"
signer = TokenSigner("correct horse battery staple")


def test_a_signed_token_verifies_to_what_was_signed():
    token = signer.sign("click", KEY, LATER, "https://shop.example/cart?utm_source=email")
    assert signer.verify(token, "click", NOW) == TokenPayload("click", KEY, int(LATER.timestamp()), "https://shop.example/cart?utm_source=email")
    assert signer.verify(signer.sign("unsubscribe", KEY, LATER), "unsubscribe", NOW) == TokenPayload("unsubscribe", KEY, int(LATER.timestamp()))


def test_tokens_are_url_safe_and_compact():
    token = signer.sign("unsubscribe", KEY, LATER)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert len(token) < 120, token


def test_a_token_past_its_expiry_is_refused_but_its_payload_is_kept_for_the_caller():
    token = signer.sign("click", KEY, NOW, "https://shop.example/")
    refused = signer.verify(token, "click", NOW + timedelta(seconds=1))
    assert isinstance(refused, Rejected) and refused.reason == EXPIRED and not refused
    assert refused.payload.target == "https://shop.example/"
    assert signer.verify(token, "click", NOW - timedelta(seconds=1)).target == "https://shop.example/"


def test_a_token_for_another_purpose_is_refused():
    click = signer.sign("click", KEY, LATER, "https://shop.example/")
    assert signer.verify(click, "unsubscribe", NOW) == Rejected(WRONG_PURPOSE)
    assert signer.verify(signer.sign("open", KEY, LATER), "unsubscribe", NOW) == Rejected(WRONG_PURPOSE)


def _reencode(token: str, change) -> str:
    body, signature = token.split(".")
    fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps(change(fields), separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{forged}.{signature}"


def test_a_tampered_payload_is_refused():
    click = signer.sign("click", KEY, LATER, "https://shop.example/")
    assert signer.verify(_reencode(click, lambda f: f[:3] + ["https://evil.example/"]), "click", NOW) == Rejected(BAD_SIGNATURE)
    assert signer.verify(_reencode(click, lambda f: [f[0], "other/key", *f[2:]]), "click", NOW) == Rejected(BAD_SIGNATURE)
    expired = signer.sign("unsubscribe", KEY, NOW - timedelta(days=1))
    assert signer.verify(_reencode(expired, lambda f: [f[0], f[1], f[2] + 10**7]), "unsubscribe", NOW) == Rejected(BAD_SIGNATURE)
    # Relabelled as an unsubscribe token: the signature was made with the click key.
    assert signer.verify(_reencode(click, lambda f: ["u", f[1], f[2]]), "unsubscribe", NOW) == Rejected(BAD_SIGNATURE)


def test_a_token_signed_with_another_secret_is_refused():
    other = TokenSigner("another project's secret").sign("unsubscribe", KEY, LATER)
    assert signer.verify(other, "unsubscribe", NOW) == Rejected(BAD_SIGNATURE)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.abc", "e30.abc", "WyJ4IiwiayIsMV0.abc", "W10.sig", "x" * 5000 + ".y"])
def test_garbage_is_malformed(token):
    assert signer.verify(token, "unsubscribe", NOW) == Rejected(MALFORMED)


def test_keys_differ_per_purpose_and_secret():
    keys = {derive_key("s", purpose) for purpose in ("unsubscribe", "click", "open")} | {derive_key("t", "click")}
    assert len(keys) == 4 and all(len(key) == 32 for key in keys)
    with pytest.raises(ValueError, match="unknown token purpose"):
        signer.sign("delete", KEY, LATER)
    with pytest.raises(ValueError, match="target"):
        signer.sign("click", KEY, LATER)


@given(key=st.text(min_size=1, max_size=80), target=st.text(max_size=200), flip=st.integers(min_value=0))
def test_any_key_and_target_round_trip_and_any_flipped_character_is_refused(key, target, flip):
    token = signer.sign("click", key, LATER, target)
    assert signer.verify(token, "click", NOW) == TokenPayload("click", key, int(LATER.timestamp()), target)
    position = flip % len(token)
    replacement = "A" if token[position] != "A" else "B"
    forged = token[:position] + replacement + token[position + 1:]
    assert not signer.verify(forged, "click", NOW)
